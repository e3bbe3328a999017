/**
 * The NAT lab's UDP probe, run inside the lab's namespaces with
 * `ip netns exec`. Two modes:
 *
 * - `reflect ADDR:PORT...` binds each endpoint, prints `ready`, and answers
 *   every request with the address and port it came from, sent from each
 *   endpoint the request names (`via`), until SIGINT or SIGTERM.
 * - `classify --primary A:P --other-port A:Q --other-address B:P --outside C:P`
 *   measures the NAT in front of it (RFC 4787) and prints one JSON line, a
 *   {@linkcode ProbeReport}:
 *   - filtering: from a fresh socket, one request to the primary endpoint
 *     asking for answers from the primary, the same address on another port,
 *     and another address: which come through tells EIF, ADF or APDF;
 *   - mapping: from another fresh socket, one request to each of the three
 *     endpoints: the same observed port for all is EIM, the same only per
 *     address is ADM, else APDM;
 *   - outside: whether an internet host that is not the server answers.
 *
 * Usage: `deno run --allow-net --unstable-net scripts/_natlab_probe.ts reflect|classify ...`
 *
 * @module
 */
import type { Filtering, Mapping } from "./_natlab_ruleset.ts";

/** What `classify` prints. */
export interface ProbeReport {
  /** The mapping class measured. */
  readonly mapping: Mapping;
  /** The filtering class measured. */
  readonly filtering: Filtering;
  /** Whether the outside host answered. */
  readonly outside: boolean;
  /** The public address and port the primary endpoint saw (mapping socket). */
  readonly observed: string;
}

/** How long a measurement listens for answers. */
const LISTEN_MS = 800;
/** Requests are re-sent this often while listening, in case one is lost. */
const RESEND_MS = 250;

interface Request {
  readonly id: string;
  readonly via: readonly string[];
}

interface Answer {
  readonly id: string;
  readonly observed: string;
  readonly via: string;
}

function endpoint(text: string): Deno.NetAddr {
  const match = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text);
  if (match === null) throw new TypeError(`Not an IPv4 address and port: "${text}"`);
  return { transport: "udp", hostname: match[1], port: Number(match[2]) };
}

function key(address: Deno.NetAddr): string {
  return `${address.hostname}:${address.port}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parse<T>(data: Uint8Array): T | undefined {
  try {
    return JSON.parse(decoder.decode(data)) as T;
  } catch {
    return undefined;
  }
}

async function reflect(endpoints: readonly string[]): Promise<void> {
  const sockets = new Map<string, Deno.DatagramConn>();
  for (const text of endpoints) {
    const address = endpoint(text);
    sockets.set(key(address), Deno.listenDatagram({ ...address, transport: "udp" }));
  }
  const stop = () => {
    for (const socket of sockets.values()) socket.close();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log("ready");
  await Promise.all([...sockets.values()].map(async (socket) => {
    try {
      for await (const [data, from] of socket) {
        const request = parse<Request>(data);
        if (request === undefined || !Array.isArray(request.via)) continue;
        const observed = key(from as Deno.NetAddr);
        for (const via of request.via) {
          const answer: Answer = { id: String(request.id), observed, via };
          await sockets.get(via)?.send(encoder.encode(JSON.stringify(answer)), from)
            .catch(() => {});
        }
      }
    } catch {
      // closed
    }
  }));
}

/**
 * Sends requests from a fresh socket, re-sending while it listens, and
 * collects the answers for `LISTEN_MS`.
 */
async function exchange(
  requests: readonly { to: Deno.NetAddr; via: readonly string[] }[],
): Promise<Answer[]> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
  const id = crypto.randomUUID();
  const answers: Answer[] = [];
  const send = () => {
    for (const { to, via } of requests) {
      const request: Request = { id, via };
      socket.send(encoder.encode(JSON.stringify(request)), to).catch(() => {});
    }
  };
  send();
  const resend = setInterval(send, RESEND_MS);
  const done = setTimeout(() => socket.close(), LISTEN_MS);
  try {
    for await (const [data] of socket) {
      const answer = parse<Answer>(data);
      if (answer?.id === id) answers.push(answer);
    }
  } catch {
    // closed when the time is up
  } finally {
    clearInterval(resend);
    clearTimeout(done);
  }
  return answers;
}

/**
 * Measures the NAT in front of this host.
 *
 * @param endpoints the reflector's endpoints and the outside host's
 * @returns the report
 * @throws {Error} if the primary endpoint does not answer at all
 */
async function classify(endpoints: {
  primary: string;
  otherPort: string;
  otherAddress: string;
  outside: string;
}): Promise<ProbeReport> {
  const { primary, otherPort, otherAddress, outside } = endpoints;
  const [filtering, mapping, far] = await Promise.all([
    exchange([{ to: endpoint(primary), via: [primary, otherPort, otherAddress] }]),
    exchange([primary, otherPort, otherAddress].map((to) => ({ to: endpoint(to), via: [to] }))),
    exchange([{ to: endpoint(outside), via: [outside] }]),
  ]);
  const came = new Set(filtering.map((answer) => answer.via));
  if (!came.has(primary)) throw new Error(`No answer from ${primary}`);
  const seen = (via: string) => {
    const answer = mapping.find((a) => a.via === via);
    if (answer === undefined) throw new Error(`No answer from ${via}`);
    return answer.observed;
  };
  const [a, b, c] = [seen(primary), seen(otherPort), seen(otherAddress)];
  return {
    mapping: a === b && a === c ? "EIM" : a === b ? "ADM" : "APDM",
    filtering: came.has(otherAddress) ? "EIF" : came.has(otherPort) ? "ADF" : "APDF",
    outside: far.length > 0,
    observed: a,
  };
}

function flag(args: readonly string[], name: string): string {
  const at = args.indexOf(name);
  if (at < 0 || at + 1 >= args.length) throw new TypeError(`Missing ${name}`);
  return args[at + 1];
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  try {
    if (mode === "reflect") {
      await reflect(rest);
    } else if (mode === "classify") {
      const report = await classify({
        primary: flag(rest, "--primary"),
        otherPort: flag(rest, "--other-port"),
        otherAddress: flag(rest, "--other-address"),
        outside: flag(rest, "--outside"),
      });
      console.log(JSON.stringify(report));
    } else {
      throw new TypeError(`Unknown mode "${mode}": use reflect or classify`);
    }
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
