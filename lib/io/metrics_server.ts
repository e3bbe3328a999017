/**
 * The server's HTTP listener for operators (`--metrics [HOST:]PORT`):
 * `GET /healthz` answers 200 with the version, uptime and whether the data
 * directory (the store) is reachable, or 503 when the server is not serving
 * (starting, shutting down, or the store unreachable); `GET /metrics` serves
 * the Prometheus text format. Nothing else is served.
 *
 * @module
 */
import { join } from "@std/path";
import { BindError } from "./bind_error.ts";

/** What the listener serves. */
export interface MetricsSource {
  /** The server's version. */
  readonly version: string;
  /** Seconds since the server started. */
  uptimeSeconds(): number;
  /** True while the server takes requests. */
  serving(): boolean;
  /** True if the store (the data directory) can be reached. */
  storeReachable(): Promise<boolean>;
  /** The Prometheus page. */
  metrics(): Promise<string>;
}

/**
 * An HTTP listener for `/healthz` and `/metrics`.
 *
 * @example
 * ```ts
 * const http = MetricsServer.start("127.0.0.1", 9464, source);
 * console.log(`http://${http.host}:${http.port}/metrics`);
 * await http.close();
 * ```
 */
export class MetricsServer {
  /** The bound address. */
  readonly host: string;
  /** The bound port. */
  readonly port: number;
  #server: Deno.HttpServer<Deno.NetAddr>;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>) {
    this.#server = server;
    this.host = server.addr.hostname;
    this.port = server.addr.port;
  }

  /**
   * Starts listening.
   *
   * @param host the address to bind (loopback unless the operator chose another)
   * @param port the port; 0 picks a free one
   * @param source what to serve
   * @returns the listener
   * @throws {BindError} if the address cannot be bound
   */
  static start(host: string, port: number, source: MetricsSource): MetricsServer {
    try {
      return new MetricsServer(Deno.serve(
        { hostname: host, port, onListen: () => {} },
        (request) => respond(request, source),
      ));
    } catch (error) {
      throw new BindError("tcp", host, port, error);
    }
  }

  /** Stops listening and waits for requests under way. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

async function respond(request: Request, source: MetricsSource): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  if (path === "/metrics") {
    return new Response(await source.metrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (path === "/healthz") {
    const store = await source.storeReachable();
    const serving = source.serving();
    const body = {
      status: serving && store ? "ok" : "unavailable",
      version: source.version,
      uptimeSeconds: Math.floor(source.uptimeSeconds()),
      serving,
      store: store ? "reachable" : "unreachable",
    };
    return Response.json(body, { status: serving && store ? 200 : 503 });
  }
  return new Response("not found: try /healthz or /metrics\n", { status: 404 });
}

/**
 * Bytes of the files under a directory, counted now (missing: 0).
 *
 * @param dir the directory
 * @returns the sum of the sizes of the regular files in it and below
 */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) total += await directoryBytes(path);
      else if (entry.isFile) total += (await Deno.stat(path)).size;
    }
  } catch {
    // Gone, or not readable: nothing counted.
  }
  return total;
}
