/**
 * The flags of the server and the client, by name without dashes: what
 * their parsers accept, what `lib/cli/flag_sources.ts` reads from the
 * environment and config files, and so what `--allow-env` grants
 * (`scripts/compile.ts`). Each program's parser, defaults and help live in
 * its entry point.
 *
 * @module
 */
import type { FlagSpec } from "./flag_sources.ts";

/** The server's flags (`server.ts`). */
export const SERVER_FLAGS: FlagSpec = {
  strings: [
    "host",
    "udp-port",
    "tcp-port",
    "udp-port2",
    "data-dir",
    "log-dir",
    "log-level",
    "log-format",
    "auth",
    "users",
    "lease",
    "max-attempts",
    "lockout",
    "max-file-size",
    "quota",
    "max-storage",
    "expire-after",
    "rate-limit",
    "session-rate-limit",
    "register-rate",
    "max-connections",
    "max-connections-per-ip",
    "tcp-idle",
    "tcp-frame-timeout",
    "metrics",
    "store",
    "advertise",
  ],
  booleans: ["help", "version", "log-stderr"],
};

/** The client's flags (`client.ts`). */
export const CLIENT_FLAGS: FlagSpec = {
  strings: [
    "server",
    "name",
    "tcp-port",
    "udp-port",
    "transport",
    "timeout",
    "script",
    "log-dir",
    "log-level",
    "log-format",
    "data-dir",
    "identity",
    "password-file",
    "download-dir",
    "max-receive",
    "keep-partial",
    "channel-mode",
    "server-key",
    "traversal",
  ],
  booleans: [
    "help",
    "version",
    "json",
    "accept-files",
    "log-stderr",
  ],
};
