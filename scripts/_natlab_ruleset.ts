/**
 * The NAT lab's kinds of NAT, what each must classify as, and the nftables
 * ruleset that makes a Linux network namespace behave as one. Pure text, so it
 * is testable without root; `scripts/_natlab_topology.ts` loads it with
 * `nft -f -` inside the NAT's namespace.
 *
 * Every kind drops unsolicited packets to the router itself (input policy
 * drop): a Linux router whose input accepts a peer's early probe creates a
 * conntrack entry of its own on that port, and the inside host's later packets
 * then get another port (docs: shared research on NATs, "the trap on Linux
 * routers").
 *
 * @module
 */

/** The kinds of NAT a lab client can sit behind. */
export const NAT_KINDS = [
  "full-cone",
  "addr-restricted",
  "port-restricted",
  "symmetric",
  "blocked",
] as const;

/** One kind of NAT (see {@linkcode NAT_KINDS}). */
export type NatKind = typeof NAT_KINDS[number];

/**
 * Two clients on one LAN behind one port-restricted router: `same-lan`
 * hairpins (a host that sends to the other's public mapping reaches it, seen
 * from its own public mapping, as RFC 4787 REQ-9 asks), `same-lan-no-hairpin`
 * does not, as many home routers do not.
 */
export const LAN_KINDS = ["same-lan", "same-lan-no-hairpin"] as const;

/** One kind of same-LAN router (see {@linkcode LAN_KINDS}). */
export type LanKind = typeof LAN_KINDS[number];

/** Any place a lab client can sit. */
export type LabKind = NatKind | LanKind;

/** Every kind, NATs first. */
export const ALL_KINDS: readonly LabKind[] = [...NAT_KINDS, ...LAN_KINDS];

/**
 * Tells a same-LAN kind from a NAT kind.
 *
 * @param kind a kind
 * @returns true for the kinds in {@linkcode LAN_KINDS}
 */
export function isLanKind(kind: LabKind): kind is LanKind {
  return (LAN_KINDS as readonly string[]).includes(kind);
}

/** How a NAT maps (RFC 4787): endpoint-independent, address-dependent, address-and-port-dependent. */
export type Mapping = "EIM" | "ADM" | "APDM";
/** How a NAT filters (RFC 4787): endpoint-independent, address-dependent, address-and-port-dependent. */
export type Filtering = "EIF" | "ADF" | "APDF";

/** What a probe must measure behind a NAT. */
export interface Behaviour {
  /** The mapping class. */
  readonly mapping: Mapping;
  /** The filtering class. */
  readonly filtering: Filtering;
  /** Whether UDP reaches an internet host other than the server. */
  readonly outside: boolean;
}

/** The behaviour each kind (and the same-LAN router) must show to the probe. */
export const EXPECTED: Readonly<Record<LabKind, Behaviour>> = {
  "full-cone": { mapping: "EIM", filtering: "EIF", outside: true },
  "addr-restricted": { mapping: "EIM", filtering: "ADF", outside: true },
  "port-restricted": { mapping: "EIM", filtering: "APDF", outside: true },
  "symmetric": { mapping: "APDM", filtering: "APDF", outside: true },
  "blocked": { mapping: "EIM", filtering: "APDF", outside: false },
  "same-lan": { mapping: "EIM", filtering: "APDF", outside: true },
  "same-lan-no-hairpin": { mapping: "EIM", filtering: "APDF", outside: true },
};

/** One inside host of a NAT, with the UDP port its client binds. */
export interface InsideHost {
  /** Its LAN address. */
  readonly address: string;
  /** The UDP port its client uses (for the hairpin rules). */
  readonly udpPort: number;
}

/** Where a NAT sits; interface names are those inside its namespace. */
export interface NatPlacement {
  /** The router's internet-side address (on interface `wan`). */
  readonly wanAddress: string;
  /** The hosts behind it (on interface `lan`); full cone forwards to the first. */
  readonly hosts: readonly InsideHost[];
  /** The server's addresses: the only UDP destinations a `blocked` NAT lets out. */
  readonly serverAddresses: readonly string[];
}

/**
 * Makes the nftables ruleset of one NAT.
 *
 * @param kind the kind of NAT, or a same-LAN router (port-restricted, and
 *   `same-lan` also hairpins between its hosts)
 * @param placement its addresses
 * @returns the ruleset, for `nft -f -`
 * @throws {RangeError} if a full cone NAT has no host to forward to
 *
 * @example
 * ```ts
 * const rules = natlabRuleset("symmetric", {
 *   wanAddress: "100.64.0.11",
 *   hosts: [{ address: "10.1.0.2", udpPort: 40000 }],
 *   serverAddresses: ["100.64.0.2", "100.64.0.3"],
 * });
 * ```
 */
export function natlabRuleset(kind: LabKind, placement: NatPlacement): string {
  const wan = placement.wanAddress;
  const cone = kind === "full-cone" || kind === "addr-restricted";
  const first = placement.hosts[0];
  if (cone && first === undefined) throw new RangeError(`A ${kind} NAT needs a host behind it`);

  const prerouting: string[] = [];
  const postrouting: string[] = [];
  const forward: string[] = [];
  const sets: string[] = [];

  if (cone) {
    // Endpoint-independent mapping: a fixed source address, the port kept.
    postrouting.push(`oifname "wan" snat to ${wan}`);
    // Endpoint-independent filtering: every UDP datagram goes to the host.
    prerouting.push(`iifname "wan" meta l4proto udp dnat to ${first!.address}`);
  } else {
    postrouting.push(`oifname "wan" masquerade${kind === "symmetric" ? " fully-random" : ""}`);
  }
  if (kind === "same-lan") {
    for (const host of placement.hosts) {
      prerouting.push(
        `iifname "lan" ip daddr ${wan} udp dport ${host.udpPort} dnat to ${host.address}`,
      );
    }
    postrouting.push(`iifname "lan" oifname "lan" ct status dnat snat to ${wan}`);
    forward.push(`iifname "lan" oifname "lan" accept`);
  }

  if (kind === "blocked") {
    const servers = placement.serverAddresses.join(", ");
    forward.push(`iifname "lan" oifname "wan" meta l4proto udp ip daddr != { ${servers} } drop`);
  }
  if (kind === "addr-restricted") {
    sets.push(
      "set seen { type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout 120s; }",
    );
    forward.push(
      `iifname "lan" oifname "wan" meta l4proto udp update @seen { ip saddr . udp sport . ip daddr }`,
    );
  }
  forward.push(`iifname "lan" oifname "wan" accept`);
  forward.push("ct state established,related accept");
  if (kind === "full-cone") forward.push(`iifname "wan" oifname "lan" meta l4proto udp accept`);
  if (kind === "addr-restricted") {
    forward.push(
      `iifname "wan" oifname "lan" meta l4proto udp ip daddr . udp dport . ip saddr @seen accept`,
    );
  }

  const chain = (
    name: string,
    hook: string,
    rules: readonly string[],
    policy = "accept",
  ) => [
    `  chain ${name} {`,
    `    ${hook} policy ${policy};`,
    ...rules.map((r) => `    ${r}`),
    "  }",
  ];
  return [
    "table ip natlab {",
    ...sets.map((set) => `  ${set}`),
    ...chain("prerouting", "type nat hook prerouting priority dstnat;", prerouting),
    ...chain("postrouting", "type nat hook postrouting priority srcnat;", postrouting),
    ...chain("input", "type filter hook input priority filter;", [
      `iifname "lo" accept`,
      "ct state established,related accept",
      `iifname "lan" accept`,
    ], "drop"),
    ...chain("forward", "type filter hook forward priority filter;", forward, "drop"),
    "}",
    "",
  ].join("\n");
}
