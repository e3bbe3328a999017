/**
 * Host candidates (ICE, RFC 8445 section 5.1.1.1): the addresses of this
 * machine's interfaces at which a peer might reach the client's UDP socket
 * directly, such as another client on the same LAN behind the same NAT.
 * Loopback and link-local addresses are left out (a peer elsewhere cannot
 * use them; link-local IPv6 would also need a zone), and so are the
 * addresses of the other family when the socket cannot use them.
 *
 * @module
 */
import { MAX_HOST_CANDIDATES } from "../wire/messages.ts";

/** One host candidate: an interface address and the UDP socket's port. */
export interface HostCandidate {
  /** The address, as text. */
  readonly ip: string;
  /** The UDP socket's port. */
  readonly port: number;
}

/** What this module needs of an interface (the fields of `Deno.NetworkInterfaceInfo`). */
export interface InterfaceAddress {
  /** `IPv4` or `IPv6`. */
  readonly family: "IPv4" | "IPv6";
  /** The address. */
  readonly address: string;
}

/**
 * Picks the host candidates among interface addresses.
 *
 * @param interfaces the interface addresses (`Deno.networkInterfaces()`)
 * @param bound the address the UDP socket is bound to: `0.0.0.0` (IPv4
 *   only), `::` (both, on a dual-stack socket) or one address (that one only)
 * @param port the UDP socket's port
 * @returns at most `MAX_HOST_CANDIDATES`, IPv4 first, without duplicates
 *
 * @example
 * ```ts
 * hostCandidates([{ family: "IPv4", address: "192.168.1.10" }], "0.0.0.0", 5000);
 * // [{ ip: "192.168.1.10", port: 5000 }]
 * ```
 */
export function hostCandidates(
  interfaces: readonly InterfaceAddress[],
  bound: string,
  port: number,
): HostCandidate[] {
  const wildcard = bound === "0.0.0.0" || bound === "::";
  const usable = interfaces.filter((i) =>
    wildcard
      ? (i.family === "IPv4" || bound === "::") && !unusable(i)
      : i.address === bound && !unusable(i)
  );
  const ordered = [
    ...usable.filter((i) => i.family === "IPv4"),
    ...usable.filter((i) => i.family === "IPv6"),
  ];
  const seen = new Set<string>();
  const candidates: HostCandidate[] = [];
  for (const { address } of ordered) {
    if (seen.has(address) || candidates.length >= MAX_HOST_CANDIDATES) continue;
    seen.add(address);
    candidates.push({ ip: address, port });
  }
  return candidates;
}

/**
 * This machine's host candidates for a UDP socket, from its interfaces now.
 *
 * @param bound the address the socket is bound to
 * @param port the socket's port
 * @returns the candidates; none if the interfaces cannot be read
 */
export function gatherHostCandidates(bound: string, port: number): HostCandidate[] {
  let interfaces: InterfaceAddress[];
  try {
    interfaces = Deno.networkInterfaces();
  } catch {
    return []; // no --allow-sys: the server-reflexive candidate still works
  }
  return hostCandidates(interfaces, bound, port);
}

/** Loopback, unspecified and link-local addresses. */
function unusable({ family, address }: InterfaceAddress): boolean {
  const lower = address.toLowerCase();
  if (family === "IPv4") {
    return lower.startsWith("127.") || lower.startsWith("169.254.") || lower === "0.0.0.0";
  }
  return lower === "::1" || lower === "::" || /^fe[89ab]/.test(lower) ||
    lower.startsWith("::ffff:127.");
}
