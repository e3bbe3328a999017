/**
 * The names the interactive client last saw online, for Tab completion:
 * kept from presence news (`joined`, `left`) and the results of `list` and
 * `lookup`, as the client's events and results report them.
 *
 * @module
 */

import type { ClientEvent, CommandResult } from "../client/client_event.ts";

/**
 * A set of names online, fed with the client's events and results.
 *
 * @example
 * ```ts
 * const online = new OnlineNames();
 * online.observe({ kind: "joined", client: { name: "Ann", ip: "10.0.0.1", udpPort: 1, tcpPort: 2, onlineMs: 0 } });
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
   * Takes an event (`joined`, `left`) or a command's result (`list`, `lookup`); ignores the rest.
   *
   * @param news the event or result
   */
  observe(news: ClientEvent | CommandResult): void {
    if ("kind" in news) {
      if (news.kind === "joined") this.#names.add(news.client.name);
      else if (news.kind === "left") this.#names.delete(news.client.name);
    } else if (news.ok && news.command === "lookup") {
      this.#names.add(news.client.name);
    } else if (news.ok && news.command === "list") {
      this.#names = new Set(news.clients.map((c) => c.name));
    }
  }
}
