import { assertThrows } from "@std/assert";
import { parseArgs } from "@std/cli/parse-args";
import { rejectSwitchValues, requireValues, UsageError } from "../lib/cli/usage_error.ts";

function check(args: string[]): void {
  requireValues(args, parseArgs(args, { string: ["udp-port", "name"] }), ["udp-port", "name"]);
}

Deno.test("requireValues() names a flag without a value, and a negative number the parser took for a flag", () => {
  assertThrows(() => check(["--name", "--udp-port", "3"]), UsageError, "--name needs a value");
  assertThrows(() => check(["--name", ""]), UsageError, "--name needs a value");
  assertThrows(
    () => check(["--udp-port", "-1"]),
    UsageError,
    '--udp-port cannot be negative, not "-1"',
  );
  check(["--udp-port", "0", "--name", "Al"]);
});

Deno.test("rejectSwitchValues() refuses a value for an on/off flag other than true or false", () => {
  assertThrows(
    () => rejectSwitchValues(["--accept-files=no"], ["accept-files"]),
    UsageError,
    '--accept-files takes no value, not "no"; leave it out for off',
  );
  rejectSwitchValues(["--accept-files", "--json=false", "--name=x"], ["accept-files", "json"]);
  rejectSwitchValues(["--", "--json=no"], ["json"]);
});
