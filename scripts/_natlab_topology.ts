/**
 * Builds and removes the NAT lab's network: Linux network namespaces joined
 * by veth pairs, an "internet" bridge, and nftables NATs. Needs root, `ip`
 * (iproute2) and `nft` (nftables). Nothing outside the namespaces it creates
 * is touched: every address lives inside them, and the host's interfaces,
 * routes and rules stay as they were.
 *
 * ```
 *   server ns (100.64.0.2 and .3)   outside ns (100.64.0.9)
 *            \                      /
 *             internet ns: bridge br0 (100.64.0.0/24)
 *            /                      \
 *   NAT ns (wan 100.64.0.N)       same-LAN router (wan 100.64.0.M)
 *      | lan 10.N.0.1/24             | bridge lan 10.M.0.1/24
 *   host ns (10.N.0.2)             host ns (10.M.0.2), host ns (10.M.0.3)
 * ```
 *
 * Namespace names are `sbnl-<run id>-<role>`, so a run never meets another's
 * and {@linkcode removeLeftovers} finds what a killed run left behind.
 *
 * @module
 */
import { type LabKind, type LanKind, type NatKind, natlabRuleset } from "./_natlab_ruleset.ts";

/** The prefix of every namespace the lab creates. */
export const NAMESPACE_PREFIX = "sbnl-";

/** The server's first address: the real server binds it. */
export const SERVER_ADDRESS = "100.64.0.2";
/** The server namespace's second address (for telling mappings apart). */
export const SERVER_ADDRESS_2 = "100.64.0.3";
/** An internet host that is not the server: `blocked` NATs cannot reach it over UDP. */
export const OUTSIDE_ADDRESS = "100.64.0.9";
/** The internet segment's prefix length. */
const INTERNET_PREFIX = 24;
/** Internet addresses .10 to .249 go to NAT routers, one per side. */
const FIRST_WAN_OCTET = 10;
const WAN_OCTETS = 240;

/** A command of the lab failed; the message names it and quotes its error output. */
export class NatlabError extends Error {
  /** @param message what failed */
  constructor(message: string) {
    super(message);
    this.name = "NatlabError";
  }
}

/**
 * Runs a command to its end.
 *
 * @param args the program and its arguments
 * @param stdin text for its standard input
 * @returns its standard output
 * @throws {NatlabError} if it cannot start or exits non-zero
 */
export async function runCommand(args: readonly string[], stdin?: string): Promise<string> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(args[0], {
      args: args.slice(1),
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new NatlabError(`Cannot run ${args[0]}: ${(error as Error).message}`);
  }
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin)).catch(() => {});
    await writer.close().catch(() => {});
  }
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    const why = new TextDecoder().decode(stderr).trim().split("\n").slice(0, 3).join("; ");
    throw new NatlabError(`${args.join(" ")} failed (exit ${code}): ${why}`);
  }
  return new TextDecoder().decode(stdout);
}

/** One client's place in the lab: the namespace it runs in and the UDP port it binds. */
export interface LabHost {
  /** The namespace to run it in (`ip netns exec`). */
  readonly namespace: string;
  /** Its LAN address. */
  readonly address: string;
  /** The UDP port its client binds (`--udp-port`). */
  readonly udpPort: number;
}

/** A NAT router and the hosts behind it, removed together. */
export interface LabSide {
  /** The kind of NAT or same-LAN router. */
  readonly kind: LabKind;
  /** The router's namespace. */
  readonly router: string;
  /** The router's internet address. */
  readonly wanAddress: string;
  /** The hosts behind it: one, or two for a same-LAN router. */
  readonly hosts: readonly LabHost[];
}

/** The UDP port lab clients bind; the same-LAN hosts use this and the next. */
export const CLIENT_UDP_PORT = 40000;

/**
 * The lab's network: the internet, the server and the outside host from the
 * start, NAT sides added and removed per test cell.
 *
 * @example
 * ```ts
 * await using lab = await NatlabTopology.create();
 * const side = await lab.addSide("symmetric");
 * await runCommand(["ip", "netns", "exec", side.hosts[0].namespace, "ip", "addr"]);
 * ```
 */
export class NatlabTopology implements AsyncDisposable {
  /** This run's id, part of every namespace name. */
  readonly id: string;
  /** The internet namespace (bridge `br0`). */
  readonly internet: string;
  /** The server namespace: {@linkcode SERVER_ADDRESS} and {@linkcode SERVER_ADDRESS_2}. */
  readonly server: string;
  /** The outside host's namespace: {@linkcode OUTSIDE_ADDRESS}. */
  readonly outside: string;
  readonly #namespaces = new Set<string>();
  readonly #pending = new Set<Promise<unknown>>();
  #nextWan = 0;
  #destroyed = false;
  #destroying: Promise<void> | undefined;

  private constructor(id: string) {
    this.id = id;
    this.internet = this.#name("inet");
    this.server = this.#name("srv");
    this.outside = this.#name("out");
  }

  /**
   * Creates the internet, server and outside namespaces.
   *
   * @returns the lab; destroy it (or `await using`) to remove everything
   * @throws {NatlabError} if a command fails; what was made is removed first
   */
  static async create(): Promise<NatlabTopology> {
    const id = crypto.randomUUID().slice(0, 8);
    const lab = new NatlabTopology(id);
    try {
      await lab.#namespace(lab.internet);
      await lab.#ip(lab.internet, "link", "add", "br0", "type", "bridge");
      await lab.#ip(lab.internet, "link", "set", "br0", "up");
      await lab.#noBridgeFilter(lab.internet);
      await lab.#internetHost(lab.server, "srv", [SERVER_ADDRESS, SERVER_ADDRESS_2]);
      await lab.#internetHost(lab.outside, "out", [OUTSIDE_ADDRESS]);
    } catch (error) {
      await lab.destroy();
      throw error;
    }
    return lab;
  }

  /**
   * Adds a NAT router of a kind with one host behind it.
   *
   * @param kind the kind of NAT
   * @returns the side
   * @throws {NatlabError} if a command fails
   */
  addSide(kind: NatKind): Promise<LabSide> {
    return this.#addRouter(kind, 1);
  }

  /**
   * Adds a router with two hosts on one LAN behind it; it masquerades as a
   * port-restricted NAT, and `same-lan` hairpins between the two.
   *
   * @param kind which same-LAN router
   * @returns the side
   * @throws {NatlabError} if a command fails
   */
  addSameLan(kind: LanKind): Promise<LabSide> {
    return this.#addRouter(kind, 2);
  }

  /**
   * Removes a side's namespaces (and with them its interfaces and rules).
   *
   * @param side what {@linkcode addSide} or {@linkcode addSameLan} returned
   */
  async removeSide(side: LabSide): Promise<void> {
    for (const host of side.hosts) await this.#removeNamespace(host.namespace);
    await this.#removeNamespace(side.router);
  }

  /** Removes every namespace of this run; a second call waits for the first. */
  destroy(): Promise<void> {
    this.#destroying ??= this.#destroy();
    return this.#destroying;
  }

  async #destroy(): Promise<void> {
    this.#destroyed = true;
    // Commands under way (a signal may come in the middle of building) finish
    // first, so that a namespace they add is removed too.
    do {
      await Promise.allSettled([...this.#pending]);
      for (const name of [...this.#namespaces].reverse()) await this.#removeNamespace(name);
    } while (this.#pending.size > 0 || this.#namespaces.size > 0);
  }

  /** Removes every namespace of this run; for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  /** The namespaces this run has made and not yet removed. */
  get namespaces(): readonly string[] {
    return [...this.#namespaces];
  }

  async #addRouter(kind: LabKind, hostCount: number): Promise<LabSide> {
    const octet = FIRST_WAN_OCTET + this.#nextWan;
    this.#nextWan = (this.#nextWan + 1) % WAN_OCTETS;
    const router = this.#name(`nat${octet}`);
    const wanAddress = `100.64.0.${octet}`;
    const lan = `10.${octet}.0`;
    const hosts: LabHost[] = Array.from({ length: hostCount }, (_, i) => ({
      namespace: this.#name(`host${octet}x${i + 1}`),
      address: `${lan}.${i + 2}`,
      udpPort: CLIENT_UDP_PORT + i,
    }));
    const side: LabSide = { kind, router, wanAddress, hosts };
    try {
      await this.#namespace(router);
      await this.#sysctl(router, "net.ipv4.ip_forward=1");
      await this.#attach(router, `p${octet}`, [wanAddress]);
      if (hostCount > 1) {
        await this.#ip(router, "link", "add", "lan", "type", "bridge");
        await this.#noBridgeFilter(router);
      }
      for (const [i, host] of hosts.entries()) {
        await this.#namespace(host.namespace);
        const inRouter = hostCount > 1 ? `h${i + 1}` : "lan";
        await this.#ip(router, "link", "add", inRouter, "type", "veth", "peer", "name", "eth0");
        await this.#ip(router, "link", "set", "eth0", "netns", host.namespace);
        if (hostCount > 1) await this.#ip(router, "link", "set", inRouter, "master", "lan");
        await this.#ip(router, "link", "set", inRouter, "up");
        await this.#ip(host.namespace, "addr", "add", `${host.address}/24`, "dev", "eth0");
        await this.#ip(host.namespace, "link", "set", "eth0", "up");
        await this.#ip(host.namespace, "route", "add", "default", "via", `${lan}.1`);
      }
      await this.#ip(router, "addr", "add", `${lan}.1/24`, "dev", "lan");
      await this.#ip(router, "link", "set", "lan", "up");
      const rules = natlabRuleset(kind, {
        wanAddress,
        hosts,
        serverAddresses: [SERVER_ADDRESS, SERVER_ADDRESS_2],
      });
      await this.#track(runCommand(["ip", "netns", "exec", router, "nft", "-f", "-"], rules));
    } catch (error) {
      await this.removeSide(side);
      throw error;
    }
    return side;
  }

  /** Puts a namespace on the internet bridge with its addresses on interface `wan`. */
  async #internetHost(name: string, port: string, addresses: readonly string[]): Promise<void> {
    await this.#namespace(name);
    await this.#attach(name, port, addresses);
  }

  /**
   * Links a namespace's `wan` to a new port of the internet bridge. The MAC
   * address follows from the first IP address, so a side re-created on the
   * same address is not hidden by a stale ARP entry elsewhere.
   */
  async #attach(name: string, port: string, addresses: readonly string[]): Promise<void> {
    const last = Number(addresses[0].split(".")[3]);
    const mac = `02:64:40:00:00:${last.toString(16).padStart(2, "0")}`;
    await this.#ip(
      name,
      "link",
      "add",
      "wan",
      "address",
      mac,
      "type",
      "veth",
      "peer",
      "name",
      port,
    );
    await this.#ip(name, "link", "set", port, "netns", this.internet);
    await this.#ip(this.internet, "link", "set", port, "master", "br0", "up");
    for (const address of addresses) {
      await this.#ip(name, "addr", "add", `${address}/${INTERNET_PREFIX}`, "dev", "wan");
    }
    await this.#ip(name, "link", "set", "wan", "up");
  }

  async #namespace(name: string): Promise<void> {
    if (this.#destroyed) throw new NatlabError("The lab is being removed");
    await this.#track(
      runCommand(["ip", "netns", "add", name]).then(() => {
        this.#namespaces.add(name);
      }),
    );
    if (this.#destroyed) throw new NatlabError("The lab is being removed");
    await this.#ip(name, "link", "set", "lo", "up");
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#pending.add(promise);
    promise.finally(() => this.#pending.delete(promise)).catch(() => {});
    return promise;
  }

  async #removeNamespace(name: string): Promise<void> {
    if (!this.#namespaces.delete(name)) return;
    await removeNamespace(name);
  }

  #ip(namespace: string, ...args: string[]): Promise<string> {
    return this.#track(runCommand(["ip", "-n", namespace, ...args]));
  }

  #sysctl(namespace: string, setting: string): Promise<string> {
    return this.#track(runCommand(["ip", "netns", "exec", namespace, "sysctl", "-qw", setting]));
  }

  /**
   * Keeps bridged frames out of the IP hooks (br_netfilter may be loaded on
   * the machine): a bridge in the lab is a switch, not a firewall.
   */
  async #noBridgeFilter(namespace: string): Promise<void> {
    await this.#sysctl(namespace, "net.bridge.bridge-nf-call-iptables=0").catch(() => {});
  }

  #name(role: string): string {
    return `${NAMESPACE_PREFIX}${this.id}-${role}`;
  }
}

/**
 * Removes a namespace after killing what still runs in it.
 *
 * @param name the namespace
 */
async function removeNamespace(name: string): Promise<void> {
  const pids = await runCommand(["ip", "netns", "pids", name]).catch(() => "");
  for (const pid of pids.split("\n").filter((line) => /^\d+$/.test(line))) {
    try {
      Deno.kill(Number(pid), "SIGKILL");
    } catch {
      // already gone
    }
  }
  await runCommand(["ip", "netns", "del", name]).catch(() => {});
}

/**
 * Removes every lab namespace on the machine (those named
 * `sbnl-...`), with the processes left running in them: what a killed run
 * left behind. It would also remove a lab that is running now.
 *
 * @returns the names removed
 */
export async function removeLeftovers(): Promise<string[]> {
  const list = await runCommand(["ip", "netns", "list"]);
  const names = list.split("\n").map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(NAMESPACE_PREFIX));
  for (const name of names) await removeNamespace(name);
  return names;
}

/**
 * Tells why the lab cannot run here, if it cannot: it needs root, `ip`
 * (iproute2), `nft` (nftables) and network namespaces.
 *
 * @returns one line for the user, or undefined if the lab can run
 */
export async function natlabUnavailable(): Promise<string | undefined> {
  const uid = await runCommand(["id", "-u"]).catch(() => "");
  if (uid.trim() !== "0") {
    return "the NAT lab needs root (it creates network namespaces); run it as root";
  }
  for (const [tool, apt] of [["ip", "iproute2"], ["nft", "nftables"]]) {
    const found = await runCommand(["sh", "-c", `command -v ${tool}`]).catch(() => "");
    if (found.trim() === "") return `${tool} is missing; install it: apt-get install -y ${apt}`;
  }
  return undefined;
}
