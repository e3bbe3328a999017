/**
 * Formats an address and port as people and URLs write them: `host:port`,
 * with an IPv6 address in brackets.
 *
 * @param host a host name, IPv4 or IPv6 address
 * @param port a port
 * @returns `127.0.0.1:3000` or `[::1]:3000`
 *
 * @example
 * ```ts
 * hostPort("::1", 3000); // "[::1]:3000"
 * ```
 */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
