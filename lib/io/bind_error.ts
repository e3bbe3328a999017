/** Thrown when a server socket cannot be bound, saying which one and why. */
export class BindError extends Error {
  /** Which socket. */
  readonly transport: "udp" | "tcp";
  /** The address it was to bind. */
  readonly host: string;
  /** The port it was to bind. */
  readonly port: number;
  /** `in_use`: the port is taken; `no_address`: the host is not local; `other`. */
  readonly reason: "in_use" | "no_address" | "other";

  /**
   * @param transport which socket
   * @param host the address
   * @param port the port
   * @param cause the error from the system
   */
  constructor(transport: "udp" | "tcp", host: string, port: number, cause: unknown) {
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "in_use"
      : cause instanceof Deno.errors.AddrNotAvailable
      ? "no_address"
      : "other";
    super(`Cannot bind ${transport.toUpperCase()} ${host}:${port}: ${(cause as Error).message}`, {
      cause,
    });
    this.name = "BindError";
    this.transport = transport;
    this.host = host;
    this.port = port;
    this.reason = reason;
  }
}
