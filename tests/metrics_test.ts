/**
 * `--metrics`: the registry renders the Prometheus text format, and a real
 * server process serves `/healthz` and a `/metrics` page that a Prometheus
 * parser (`parse-prometheus-text-format`) and a strict line check accept,
 * with counts that follow the traffic.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { MetricsRegistry } from "../lib/io/metrics_registry.ts";
import { MetricsServer } from "../lib/io/metrics_server.ts";
import { runClient, runProgram, SERVER_PATH, startServer, tempDir } from "./_processes.ts";
import { VERSION } from "../lib/version.ts";

interface Family {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string> }[];
}

/** Checks every line against the text format (0.0.4) and parses the page. */
function parsePage(page: string): Map<string, Family> {
  assert(page.endsWith("\n"), "the page ends with a newline");
  const declared = new Map<string, string>();
  const sample =
    /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/;
  for (const line of page.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === "TYPE") {
        assertMatch(meta[3], /^(counter|gauge|histogram)$/);
        declared.set(meta[2], meta[3]);
        if (meta[3] === "counter") assertMatch(meta[2], /_total$/, "a counter ends in _total");
      }
      assertMatch(meta[2], /^switchboard_/);
      continue;
    }
    const match = sample.exec(line);
    if (match === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const family = match[1].replace(/_(bucket|sum|count)$/, "");
    assert(declared.has(match[1]) || declared.get(family) === "histogram", `undeclared: ${line}`);
  }
  const families = parsePrometheusTextFormat(page) as Family[];
  return new Map(families.map((f) => [f.name, f]));
}

function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}) {
  const family = families.get(name);
  if (family === undefined) throw new Error(`no ${name}`);
  const series = family.metrics.find((m) =>
    Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
  );
  return series === undefined ? undefined : Number(series.value ?? NaN);
}

Deno.test("MetricsRegistry renders counters, gauges and histograms in the text format", () => {
  const m = new MetricsRegistry();
  m.counter("switchboard_things_total", "Things,\nby kind", []);
  m.add("switchboard_things_total", 2, { kind: 'a "quoted"\\ one' });
  m.gauge("switchboard_level", "A level", () => 7);
  m.histogram("switchboard_wait_seconds", "Waits", [0.1, 1]);
  m.observe("switchboard_wait_seconds", 0.05);
  m.observe("switchboard_wait_seconds", 0.5);
  m.observe("switchboard_wait_seconds", 5);
  const page = m.render();
  assertEquals(
    page,
    [
      "# HELP switchboard_things_total Things,\\nby kind",
      "# TYPE switchboard_things_total counter",
      'switchboard_things_total{kind="a \\"quoted\\"\\\\ one"} 2',
      "# HELP switchboard_level A level",
      "# TYPE switchboard_level gauge",
      "switchboard_level 7",
      "# HELP switchboard_wait_seconds Waits",
      "# TYPE switchboard_wait_seconds histogram",
      'switchboard_wait_seconds_bucket{le="0.1"} 1',
      'switchboard_wait_seconds_bucket{le="1"} 2',
      'switchboard_wait_seconds_bucket{le="+Inf"} 3',
      "switchboard_wait_seconds_sum 5.55",
      "switchboard_wait_seconds_count 3",
      "",
    ].join("\n"),
  );
  parsePage(page);
});

Deno.test("MetricsRegistry refuses a counter without _total and a negative count", () => {
  const m = new MetricsRegistry();
  let thrown = 0;
  try {
    m.counter("switchboard_things", "x");
  } catch (error) {
    thrown += error instanceof TypeError ? 1 : 0;
  }
  m.counter("switchboard_things_total", "x");
  try {
    m.add("switchboard_things_total", -1);
  } catch (error) {
    thrown += error instanceof RangeError ? 1 : 0;
  }
  assertEquals(thrown, 2);
});

Deno.test("server --metrics serves /healthz and a /metrics page that follows the traffic", async () => {
  await using dir = await tempDir();
  await using server = await startServer({
    dataDir: `${dir.path}/data`,
    logDir: `${dir.path}/logs`,
    extraArgs: ["--metrics", "0"],
  });
  const line = await server.waitForLine(/^Metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/);
  const base = line.split(" ")[1].replace(/\/metrics$/, "");

  const health = await fetch(`${base}/healthz`);
  assertEquals(health.status, 200);
  const body = await health.json();
  assertEquals(body.status, "ok");
  assertEquals(body.version, VERSION);
  assertEquals(body.store, "reachable");
  assert(typeof body.uptimeSeconds === "number");
  const missing = await fetch(`${base}/nothing`);
  assertEquals(missing.status, 404);
  await missing.body?.cancel();

  await Deno.writeFile(`${dir.path}/data.bin`, new Uint8Array(200_000).fill(7));
  const client = await runClient({
    args: ["--server", server.address, "--name", "Ann", "--log-dir", `${dir.path}/logs`],
    stdin:
      "register\nlist\ntcp hello\nupload data.bin\ndownload data.bin copy.bin\nlookup Nobody\n",
    cwd: dir.path,
  });
  assertEquals(client.code, 1, client.stderr); // the lookup of Nobody fails
  // Garbage is rejected and counted.
  const udp = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  await udp.send(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"), {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.udpPort,
  });
  udp.close();
  await new Promise((resolve) => setTimeout(resolve, 200));

  const response = await fetch(`${base}/metrics`);
  assertEquals(response.status, 200);
  assertStringIncludes(response.headers.get("content-type") ?? "", "text/plain; version=0.0.4");
  const page = await response.text();
  const families = parsePage(page);
  assertEquals(value(families, "switchboard_build_info", { version: VERSION }), 1);
  assertEquals(value(families, "switchboard_registered_clients"), 1);
  assertEquals(value(families, "switchboard_datagrams_received_total", { type: "register" }), 1);
  assertEquals(value(families, "switchboard_datagrams_sent_total", { type: "register_ok" }), 1);
  assert(value(families, "switchboard_frames_received_total", { type: "text" })! >= 1);
  assertEquals(
    value(families, "switchboard_datagrams_received_total", { type: "invalid" }),
    1,
  );
  assertEquals(
    value(families, "switchboard_inputs_rejected_total", { reason: "not_switchboard" }),
    1,
  );
  assertEquals(value(families, "switchboard_requests_refused_total", { code: "not_online" }), 1);
  assertEquals(value(families, "switchboard_events_total", { kind: "registered" }), 1);
  assert(value(families, "switchboard_frames_sent_total", { type: "file_chunk" })! >= 1);
  assert(value(families, "switchboard_storage_used_bytes")! >= 200_000);
  assertEquals(value(families, "switchboard_handshake_failures_total"), 0);
  assertEquals(value(families, "switchboard_relay_bytes_total"), 0);
  for (const name of ["switchboard_active_sessions", "switchboard_storage_used_bytes"]) {
    assert(value(families, name) !== undefined, name);
  }
  // (The parser drops a histogram's labels, sum and count: read them from the page.)
  const count = (series: string) => Number(new RegExp(`^${series} (\\d+)$`, "m").exec(page)?.[1]);
  assert(count('switchboard_request_duration_seconds_count\\{type="register"\\}') >= 1, page);
  assert(count("switchboard_store_write_duration_seconds_count") >= 1, page);
  assertEquals(families.get("switchboard_store_write_duration_seconds")?.type, "HISTOGRAM");

  assertEquals(await server.stop(), 0);
});

Deno.test("server --metrics on a port in use fails in one line, before creating the data directory", async () => {
  await using dir = await tempDir();
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const result = await runProgram(SERVER_PATH, {
      args: [
        ...["--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0"],
        ...["--data-dir", `${dir.path}/data`, "--log-dir", `${dir.path}/logs`],
        ...["--metrics", `127.0.0.1:${(taken.addr as Deno.NetAddr).port}`],
      ],
    });
    assertEquals(result.code, 1);
    assertMatch(result.stderr.trim(), /^error: metrics port \d+ is in use; pass --metrics/);
    assertEquals(await Deno.stat(`${dir.path}/data`).catch(() => null), null);
  } finally {
    taken.close();
  }
});

Deno.test("server --metrics refuses a value that is not [HOST:]PORT", async () => {
  const result = await runProgram(SERVER_PATH, { args: ["--metrics", "::1:9100"] });
  assertEquals(result.code, 2);
  assertMatch(result.stderr, /^error: --metrics must look like PORT, HOST:PORT or \[IPv6\]:PORT/);
});

Deno.test("MetricsServer answers /healthz with 503 when not serving or the store is unreachable", async () => {
  let serving = true, store = true;
  const http = MetricsServer.start("127.0.0.1", 0, {
    version: "9.9.9",
    uptimeSeconds: () => 12.7,
    serving: () => serving,
    storeReachable: () => Promise.resolve(store),
    metrics: () => Promise.resolve(""),
  });
  try {
    const url = `http://127.0.0.1:${http.port}/healthz`;
    const ok = await fetch(url);
    assertEquals([ok.status, await ok.json()], [200, {
      status: "ok",
      version: "9.9.9",
      uptimeSeconds: 12,
      serving: true,
      store: "reachable",
    }]);
    serving = false;
    const stopping = await fetch(url);
    assertEquals([stopping.status, (await stopping.json()).status], [503, "unavailable"]);
    serving = true;
    store = false;
    const lost = await fetch(url);
    assertEquals([lost.status, (await lost.json()).store], [503, "unreachable"]);
    const post = await fetch(url, { method: "POST" });
    assertEquals(post.status, 405);
    await post.body?.cancel();
  } finally {
    await http.close();
  }
});
