/**
 * The server's address for a client: an IP address as given, or a host
 * name resolved once (split out of `client_driver.ts`).
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";

/** Thrown by {@linkcode ClientDriver.open} when the server's host name does not resolve. */
export class ServerNameError extends Error {
  /** @param message what is wrong, one sentence */
  constructor(message: string) {
    super(message);
    this.name = "ServerNameError";
  }
}

/**
 * The address datagrams to the server go to: an IP address as given, or the
 * first address a host name resolves to (the system's resolver, so
 * `/etc/hosts` counts), looked up once rather than on every send, and so
 * that a name that does not resolve fails at once instead of after every
 * retry.
 *
 * @param host an IP address or a host name
 * @returns the IP address to send to
 * @throws {ServerNameError} if the name does not resolve
 */
export async function resolveServer(host: string): Promise<string> {
  if (host === "localhost") return "127.0.0.1";
  if (isIP(host) !== 0) return host;
  try {
    return (await lookup(host)).address;
  } catch (error) {
    const code = (error as { code?: string }).code;
    const why = code === "ENOTFOUND" ? "no such host" : (error as Error).message;
    throw new ServerNameError(`Cannot resolve the server name "${host}": ${why}`);
  }
}
