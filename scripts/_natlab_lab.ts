/**
 * The NAT lab at work: the topology, the real server and the probe's
 * reflectors running in it, the self-check that each NAT kind classifies as
 * intended, and test cells that run two real clients through a pair of NATs
 * (connect, chat, sendfile) and report what worked.
 *
 * @module
 */
import { fromFileUrl } from "@std/path";
import { NamespacedProgram } from "./_natlab_process.ts";
import type { ProbeReport } from "./_natlab_probe.ts";
import {
  type Behaviour,
  EXPECTED,
  isLanKind,
  type LabKind,
  type LanKind,
  type NatKind,
} from "./_natlab_ruleset.ts";
import {
  type LabHost,
  type LabSide,
  NatlabError,
  NatlabTopology,
  OUTSIDE_ADDRESS,
  runCommand,
  SERVER_ADDRESS,
  SERVER_ADDRESS_2,
} from "./_natlab_topology.ts";

const SERVER_PATH = fromFileUrl(new URL("../server.ts", import.meta.url));
const CLIENT_PATH = fromFileUrl(new URL("../client.ts", import.meta.url));
const PROBE_PATH = fromFileUrl(new URL("./_natlab_probe.ts", import.meta.url));
const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=statfs,networkInterfaces",
];

/** The server's UDP and TCP ports inside its namespace. */
const SERVER_UDP_PORT = 3000;
const SERVER_TCP_PORT = 3001;
/** The reflector's two ports, on both server addresses and the outside host. */
const REFLECT_PORT = 3478;
const REFLECT_PORT_2 = 3479;
/** How long a program gets to start (Deno starts in about a second; the machine may be busy). */
const START_MS = 20_000;
/** Chat messages the initiator sends in a cell; the acceptor answers with one. */
const CELL_MESSAGES = 3;
/**
 * The size of the file a cell sends: 1 MiB, so that a session lasts long
 * enough (a few hundred ms on the lab's links) for its checks to end, and
 * the path a cell reports is the one the pair settles on.
 */
const CELL_FILE_BYTES = 1024 * 1024;

/** The result of the self-check for one kind. */
export interface SelfCheck {
  /** The kind checked. */
  readonly kind: LabKind;
  /** What it must show. */
  readonly expected: Behaviour;
  /** What the probe measured, or undefined if the probe failed. */
  readonly measured?: ProbeReport;
  /** Why the probe failed. */
  readonly error?: string;
  /** True if the measurement matches. */
  readonly ok: boolean;
}

/** What one test cell found. */
export interface CellResult {
  /** The initiator's NAT kind (the router's, for a same-LAN cell). */
  readonly initiator: string;
  /** The acceptor's NAT kind. */
  readonly acceptor: string;
  /**
   * `direct` if the session found a direct path (a `peer_path` event on
   * either side), `relay` if it worked through the server's relay only,
   * `failed` if no session was set up.
   */
  readonly path: "direct" | "relay" | "failed";
  /** From the initiator's `connect` to the first direct path either side found, in ms. */
  readonly directMs?: number;
  /** From the initiator's `connect` until both programs had finished (chat and file done), in ms. */
  readonly finishedMs?: number;
  /** From the initiator's `connect` to its session being up, in ms. */
  readonly sessionMs: number | null;
  /** Chat messages delivered, both ways. */
  readonly delivered: number;
  /** Chat messages sent, both ways. */
  readonly sent: number;
  /** True if the file arrived, SHA-256 checked. */
  readonly file: boolean;
  /** Where the acceptor saw the request come from (`ip:port`), if it came. */
  readonly requestFrom?: string;
  /** The first error a client printed, if any. */
  readonly error?: string;
  /** The initiator's NAT mapping as its address discovery found it (`status`), if it said. */
  readonly initiatorMapping?: string;
  /** The acceptor's, the same way. */
  readonly acceptorMapping?: string;
  /** True if the routers' connection tracking was flushed (`flushAtMs`) before the cell ended. */
  readonly flushed?: boolean;
}

/** Options of {@linkcode Natlab.runCell} and {@linkcode Natlab.runSameLan}. */
export interface CellOptions {
  /** How long the cell may take in all, ms. */
  readonly timeoutMs: number;
  /**
   * Flush the routers' connection tracking (`conntrack -F`, every NAT
   * binding gone) this long after the session came up, ms, while the chat
   * and the file go on; absent: never.
   */
  readonly flushAtMs?: number;
}

/** Options of {@linkcode Natlab.open}. */
export interface NatlabOptions {
  /** A directory for the programs' data, logs and files (it must exist). */
  readonly workDir: string;
}

/**
 * A running lab: build it with {@linkcode Natlab.open}, close it to remove
 * everything (processes, namespaces).
 *
 * @example
 * ```ts
 * await using lab = await Natlab.open({ workDir: await Deno.makeTempDir() });
 * const checks = await lab.selfCheck(["symmetric"]);
 * const cell = await lab.runCell("full-cone", "port-restricted", { timeoutMs: 15_000 });
 * ```
 */
export class Natlab implements AsyncDisposable {
  /** The network. */
  readonly topology: NatlabTopology;
  readonly #workDir: string;
  readonly #programs = new Set<NamespacedProgram>();
  #cells = 0;

  private constructor(topology: NatlabTopology, workDir: string) {
    this.topology = topology;
    this.#workDir = workDir;
  }

  /**
   * Builds the topology and starts the server and the reflectors.
   *
   * @param options where the programs write
   * @returns the lab
   * @throws {NatlabError} if a command or program fails to start; what was made is removed
   */
  static async open(options: NatlabOptions): Promise<Natlab> {
    const topology = await NatlabTopology.create();
    const lab = new Natlab(topology, options.workDir);
    try {
      await Promise.all([
        lab.#startReady("reflector", topology.server, [
          "--allow-net",
          PROBE_PATH,
          "reflect",
          ...[SERVER_ADDRESS, SERVER_ADDRESS_2].flatMap((a) =>
            [REFLECT_PORT, REFLECT_PORT_2].map((p) => `${a}:${p}`)
          ),
        ], /^ready$/),
        lab.#startReady("outside reflector", topology.outside, [
          "--allow-net",
          PROBE_PATH,
          "reflect",
          `${OUTSIDE_ADDRESS}:${REFLECT_PORT}`,
        ], /^ready$/),
        lab.#startReady("server", topology.server, [
          ...PERMISSIONS,
          SERVER_PATH,
          ...["--host", SERVER_ADDRESS, "--udp-port", `${SERVER_UDP_PORT}`],
          ...["--tcp-port", `${SERVER_TCP_PORT}`],
          ...["--data-dir", `${options.workDir}/server-data`],
          ...["--log-dir", `${options.workDir}/server-logs`],
        ], /^Server running/),
      ]);
    } catch (error) {
      await lab.close();
      throw error;
    }
    return lab;
  }

  /** The server's UDP address, as clients give it to `--server`. */
  get serverAddress(): string {
    return `${SERVER_ADDRESS}:${SERVER_UDP_PORT}`;
  }

  /**
   * Checks that each kind of NAT behaves as intended: a side of each kind is
   * built, the probe classifies it, the sides are removed.
   *
   * @param kinds the kinds to check (a same-LAN router from its first host)
   * @returns one result per kind, in order
   */
  async selfCheck(kinds: readonly LabKind[]): Promise<SelfCheck[]> {
    const sides: LabSide[] = [];
    try {
      for (const kind of kinds) {
        sides.push(
          isLanKind(kind)
            ? await this.topology.addSameLan(kind)
            : await this.topology.addSide(kind),
        );
      }
      return await Promise.all(sides.map((side) => this.#classify(side)));
    } finally {
      for (const side of sides) await this.topology.removeSide(side);
    }
  }

  /**
   * Runs the real client in two places through the server: the initiator
   * registers, connects to the acceptor, sends three messages and a file,
   * waits for one message back, and terminates.
   *
   * @param initiator the initiator's NAT kind
   * @param acceptor the acceptor's NAT kind
   * @param options how long the cell may take in all, and when to flush the NATs
   * @returns what worked
   */
  async runCell(
    initiator: NatKind,
    acceptor: NatKind,
    options: CellOptions,
  ): Promise<CellResult> {
    const a = await this.topology.addSide(initiator);
    try {
      const b = await this.topology.addSide(acceptor);
      try {
        return await this.#chat(initiator, acceptor, a.hosts[0], b.hosts[0], {
          ...options,
          routers: [a.router, b.router],
        });
      } finally {
        await this.topology.removeSide(b);
      }
    } finally {
      await this.topology.removeSide(a);
    }
  }

  /**
   * Runs the same cell between two hosts on one LAN behind one router.
   *
   * @param kind which same-LAN router
   * @param options how long the cell may take in all, and when to flush the router
   * @returns what worked
   */
  async runSameLan(kind: LanKind, options: CellOptions): Promise<CellResult> {
    const side = await this.topology.addSameLan(kind);
    try {
      return await this.#chat(kind, kind, side.hosts[0], side.hosts[1], {
        ...options,
        routers: [side.router],
      });
    } finally {
      await this.topology.removeSide(side);
    }
  }

  /** Stops every program and removes the network. Safe to call twice. */
  async close(): Promise<void> {
    await Promise.all([...this.#programs].map((program) => program.stop()));
    this.#programs.clear();
    await this.topology.destroy();
  }

  /** Closes the lab; for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Kills every program at once, without waiting: for a signal handler that
   * must clean up before the process exits.
   */
  killAll(): void {
    for (const program of this.#programs) {
      try {
        Deno.kill(program.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }

  async #classify(side: LabSide): Promise<SelfCheck> {
    const kind = side.kind;
    const expected = EXPECTED[kind];
    const probe = this.#start(`probe (${kind})`, side.hosts[0].namespace, [
      "--allow-net",
      PROBE_PATH,
      "classify",
      ...["--primary", `${SERVER_ADDRESS}:${REFLECT_PORT}`],
      ...["--other-port", `${SERVER_ADDRESS}:${REFLECT_PORT_2}`],
      ...["--other-address", `${SERVER_ADDRESS_2}:${REFLECT_PORT}`],
      ...["--outside", `${OUTSIDE_ADDRESS}:${REFLECT_PORT}`],
    ]);
    try {
      const code = await probe.finish(START_MS);
      const line = probe.stdout.find((l) => l.text.startsWith("{"));
      if (code !== 0 || line === undefined) {
        return { kind, expected, ok: false, error: probe.errorText || `exit ${code}` };
      }
      const measured = JSON.parse(line.text) as ProbeReport;
      const ok = measured.mapping === expected.mapping &&
        measured.filtering === expected.filtering && measured.outside === expected.outside;
      return { kind, expected, measured, ok };
    } finally {
      this.#programs.delete(probe);
    }
  }

  async #chat(
    initiatorKind: string,
    acceptorKind: string,
    initiator: LabHost,
    acceptor: LabHost,
    options: CellOptions & { readonly routers: readonly string[] },
  ): Promise<CellResult> {
    const { timeoutMs } = options;
    const n = ++this.#cells;
    const dir = `${this.#workDir}/cell${n}`;
    await Deno.mkdir(dir, { recursive: true });
    const file = `${dir}/payload.bin`;
    const content = new Uint8Array(CELL_FILE_BYTES);
    // getRandomValues fills at most 64 KiB at a time.
    for (let at = 0; at < content.length; at += 65536) {
      crypto.getRandomValues(content.subarray(at, at + 65536));
    }
    await Deno.writeFile(file, content);
    const [aName, bName] = [`a${n}`, `b${n}`];
    const within = Math.max(1, Math.ceil(timeoutMs / 1000));
    const bob = await this.#client(bName, acceptor, dir, [
      `register ${bName}`,
      ...discovered(bName),
      "accept",
      `wait messages ${CELL_MESSAGES} within ${within}`,
      "send back",
      `wait offer within ${within}`,
      `wait transfers within ${within}`,
      `wait terminate within ${within}`,
    ], ["--accept-files"]);
    // The cell's time starts once the initiator is registered: starting Deno is not the NAT's doing.
    let deadline = Number.POSITIVE_INFINITY;
    const left = () => Math.max(0, deadline - performance.now());
    let alice: NamespacedProgram | undefined;
    let flush: { timer: ReturnType<typeof setTimeout>; done?: Promise<unknown> } | undefined;
    try {
      const failed = (error: string): CellResult => ({
        initiator: initiatorKind,
        acceptor: acceptorKind,
        path: "failed",
        sessionMs: null,
        delivered: 0,
        sent: CELL_MESSAGES + 1,
        file: false,
        error,
      });
      const bobIn = await bob.waitFor(/"command":"register","ok":true/, START_MS);
      if (bobIn === undefined) {
        await bob.stop();
        return failed(`${bName} did not register: ${bob.errorText || "no answer"}`);
      }
      alice = await this.#client(aName, initiator, dir, [
        `register ${aName}`,
        ...discovered(aName),
        `connect ${bName}`,
        ...Array.from({ length: CELL_MESSAGES }, (_, i) => `send m${i + 1}`),
        `sendfile ${file}`,
        `wait transfers within ${within}`,
        `wait messages 1 within ${within}`,
        "terminate",
      ]);
      const registered = await alice.waitFor(/"command":"register","ok":true/, START_MS);
      if (registered === undefined) {
        await alice.stop();
        return failed(`${aName} did not register: ${alice.errorText || "no answer"}`);
      }
      deadline = registered.at + timeoutMs;
      // The session's time starts at the connect, after address discovery's `status`.
      const asked = await alice.waitFor(/"command":"status"/, left());
      const connected = await alice.waitFor(/"command":"connect","ok":true/, left());
      if (options.flushAtMs !== undefined && connected !== undefined) {
        const at = Math.max(0, connected.at + options.flushAtMs - performance.now());
        const routers = options.routers;
        flush = { timer: setTimeout(() => flush!.done = flushRouters(routers), at) };
      }
      await Promise.all([alice.finish(left()), bob.finish(left())]);
      const finishedAt = performance.now();
      const events = (program: NamespacedProgram) =>
        program.stdout.flatMap((line) => {
          try {
            return [JSON.parse(line.text) as Record<string, unknown>];
          } catch {
            return [];
          }
        });
      const messages = (program: NamespacedProgram) =>
        events(program).filter((e) => e.event === "message").length;
      const arrived = events(bob).some((e) => e.event === "file_done" && e.direction === "receive");
      // What a client said when the cell's time ran out and it was stopped is not the cause.
      const printed = [alice, bob]
        .map((p) => p.stderr.find((l) => l.text.startsWith("error:") && l.at < deadline))
        .find((line) => line !== undefined)?.text;
      const request = events(bob).find((e) => e.event === "request");
      const mapping = (program: NamespacedProgram) => {
        const status = events(program).find((e) => e.command === "status");
        return typeof status?.mapping === "string" ? { mapping: status.mapping } : {};
      };
      // A flush not yet started when the cell ended does not happen.
      clearTimeout(flush?.timer);
      const flushed = flush?.done !== undefined;
      await flush?.done;
      const requested = request !== undefined;
      // Direct if either side found a direct path (each picks its own pair), timed by the first.
      const directAt = [alice, bob].flatMap((program) =>
        program.stdout.filter((line) =>
          line.text.includes('"event":"peer_path"') && line.text.includes('"kind":"direct"')
        ).map((line) =>
          line.at
        )
      ).sort((x, y) => x - y)[0];
      const direct = directAt !== undefined;
      const error = printed ??
        (connected !== undefined
          ? undefined
          : `no session within ${Math.round(timeoutMs / 1000)} s; ${bName} ${
            requested ? "saw the request" : "never saw the request"
          }`);
      return {
        initiator: initiatorKind,
        acceptor: acceptorKind,
        path: connected === undefined ? "failed" : direct ? "direct" : "relay",
        ...(directAt === undefined
          ? {}
          : { directMs: Math.round(directAt - (asked ?? registered).at) }),
        ...(connected === undefined
          ? {}
          : { finishedMs: Math.round(finishedAt - (asked ?? registered).at) }),
        sessionMs: connected === undefined
          ? null
          : Math.round(connected.at - (asked ?? registered).at),
        delivered: messages(alice) + messages(bob),
        sent: CELL_MESSAGES + 1,
        file: arrived,
        ...(requested ? { requestFrom: `${request.ip}:${request.udpPort}` } : {}),
        ...(error === undefined ? {} : { error }),
        ...prefixed("initiator", mapping(alice)),
        ...prefixed("acceptor", mapping(bob)),
        ...(options.flushAtMs === undefined ? {} : { flushed }),
      };
    } finally {
      clearTimeout(flush?.timer);
      await flush?.done;
      await Promise.all([bob.stop(), alice?.stop()]);
      this.#programs.delete(bob);
      if (alice !== undefined) this.#programs.delete(alice);
    }
  }

  async #client(
    name: string,
    host: LabHost,
    dir: string,
    script: readonly string[],
    more: readonly string[] = [],
  ): Promise<NamespacedProgram> {
    const path = `${dir}/${name}.txt`;
    await Deno.writeTextFile(path, script.join("\n") + "\n");
    return this.#start(name, host.namespace, [
      ...PERMISSIONS,
      CLIENT_PATH,
      ...["--server", this.serverAddress, "--udp-port", `${host.udpPort}`],
      ...["--data-dir", `${dir}/${name}-data`, "--log-dir", `${dir}/${name}-logs`],
      ...["--download-dir", `${dir}/${name}-downloads`],
      "--json",
      ...["--script", path],
      ...more,
    ], dir);
  }

  #start(
    label: string,
    namespace: string,
    args: readonly string[],
    cwd?: string,
  ): NamespacedProgram {
    const program = NamespacedProgram.start(label, namespace, args, { cwd });
    this.#programs.add(program);
    return program;
  }

  async #startReady(
    label: string,
    namespace: string,
    args: readonly string[],
    ready: RegExp,
  ): Promise<void> {
    const program = this.#start(label, namespace, args);
    if (await program.waitFor(ready, START_MS) === undefined) {
      throw new NatlabError(`The ${label} did not start: ${program.errorText || "no output"}`);
    }
  }
}

/**
 * Script lines that leave a client's address discovery done before `status`
 * reports it: discovery's two `reflect`s leave before the first `lookup` and
 * after the first answer, so on a path without loss two lookups answered in
 * order mean both `reflect_ok`s are in.
 */
function discovered(name: string): string[] {
  return [`lookup ${name}`, `lookup ${name}`, "status"];
}

function prefixed(
  side: "initiator" | "acceptor",
  found: { mapping?: string },
): { initiatorMapping?: string } | { acceptorMapping?: string } {
  if (found.mapping === undefined) return {};
  return side === "initiator"
    ? { initiatorMapping: found.mapping }
    : { acceptorMapping: found.mapping };
}

/** Forgets every NAT binding of the routers (`conntrack -F` in each namespace). */
function flushRouters(routers: readonly string[]): Promise<unknown> {
  return Promise.all(
    routers.map((router) =>
      runCommand(["ip", "netns", "exec", router, "conntrack", "-F"]).catch((error) =>
        console.error(`natlab: could not flush ${router}: ${(error as Error).message}`)
      )
    ),
  );
}
