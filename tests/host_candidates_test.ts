/** Host candidates (`lib/io/host_candidates.ts`): which interface addresses a peer may use. */
import { assert, assertEquals } from "@std/assert";
import { gatherHostCandidates, hostCandidates } from "../lib/io/host_candidates.ts";

const INTERFACES = [
  { family: "IPv4", address: "127.0.0.1" },
  { family: "IPv6", address: "::1" },
  { family: "IPv4", address: "192.168.1.10" },
  { family: "IPv6", address: "fe80::1c2d:3eff:fe4f:5a6b" },
  { family: "IPv6", address: "2001:db8::10" },
  { family: "IPv4", address: "169.254.3.4" },
  { family: "IPv4", address: "10.8.0.2" },
  { family: "IPv4", address: "192.168.1.10" },
] as const;

Deno.test("hostCandidates() leaves out loopback, link-local and duplicates, IPv4 first", () => {
  assertEquals(hostCandidates(INTERFACES, "::", 5000), [
    { ip: "192.168.1.10", port: 5000 },
    { ip: "10.8.0.2", port: 5000 },
    { ip: "2001:db8::10", port: 5000 },
  ]);
});

Deno.test("hostCandidates() gives an IPv4 socket IPv4 addresses and a bound socket its own", () => {
  assertEquals(hostCandidates(INTERFACES, "0.0.0.0", 7).map((c) => c.ip), [
    "192.168.1.10",
    "10.8.0.2",
  ]);
  assertEquals(hostCandidates(INTERFACES, "10.8.0.2", 7), [{ ip: "10.8.0.2", port: 7 }]);
  assertEquals(hostCandidates(INTERFACES, "127.0.0.1", 7), []);
});

Deno.test("hostCandidates() gives at most 8", () => {
  const many = Array.from({ length: 20 }, (_, i) => ({
    family: "IPv4" as const,
    address: `10.0.0.${i + 1}`,
  }));
  assertEquals(hostCandidates(many, "0.0.0.0", 1).length, 8);
});

Deno.test("gatherHostCandidates() reads this machine's interfaces", () => {
  const found = gatherHostCandidates("::", 4242);
  for (const c of found) {
    assertEquals(c.port, 4242);
    assert(!c.ip.startsWith("127.") && c.ip !== "::1", c.ip);
  }
});
