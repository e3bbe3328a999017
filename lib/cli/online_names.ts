/**
 * The names the interactive client last saw online, for Tab completion:
 * kept from presence news (`joined`, `left`) and the results of `list` and
 * `lookup`, as the client's events and results report them.
 *
 * @module
 */

/**
 * A set of names online, fed with the client's events and results.
 *
 * @example
 * ```ts
 * const online = new OnlineNames();
 * online.observe("joined", { client: { name: "Ann" } });
 * [...online.names]; // ["Ann"]
 * ```
 */
export class OnlineNames {
  #names = new Set<string>();

  /** The names as last seen. */
  get names(): Iterable<string> {
    return this.#names;
  }

  /**
   * Takes an event or a result's data.
   *
   * @param kind the event's kind or the result's command (`joined`, `left`, `list`, `lookup`)
   * @param data its data, if any
   */
  observe(kind: string, data: Record<string, unknown> | undefined): void {
    const one = nameOf(data?.client);
    if (kind === "joined" && one !== undefined) this.#names.add(one);
    else if (kind === "left" && one !== undefined) this.#names.delete(one);
    else if (kind === "lookup" && one !== undefined) this.#names.add(one);
    else if (kind === "list" && Array.isArray(data?.clients)) {
      this.#names = new Set(data.clients.map(nameOf).filter((n) => n !== undefined));
    }
  }
}

function nameOf(client: unknown): string | undefined {
  const name = (client as { name?: unknown } | undefined)?.name;
  return typeof name === "string" ? name : undefined;
}
