/**
 * The user's files on the server, over TCP: `files`, `delete`, `upload`
 * (the driver streams the data after the request) and `download` (the
 * driver receives and checks the data after the reply).
 *
 * @module
 */
import { toHex } from "../hex.ts";
import { fileNameProblem } from "../wire/file_name.ts";
import type { Outbox } from "./outbox.ts";
import type { ServerLink } from "./server_link.ts";

/** The commands about server files (the driver has hashed an upload's file). */
export type ServerFileCommand =
  | { readonly kind: "files" }
  | { readonly kind: "delete" | "download"; readonly name: string }
  | {
    readonly kind: "upload";
    readonly name: string;
    readonly size: number;
    readonly sha256: Uint8Array;
  };

/** Uploads may take this long per MiB beyond the usual give-up time. */
const UPLOAD_MS_PER_MIB = 1000;

/**
 * Server files.
 *
 * @example
 * ```ts
 * const files = new ServerFiles(link, outbox);
 * files.run(now, 3, { kind: "files" });
 * ```
 */
export class ServerFiles {
  #link: ServerLink;
  #outbox: Outbox;

  /**
   * @param link the server link
   * @param outbox where results go
   */
  constructor(link: ServerLink, outbox: Outbox) {
    this.#link = link;
    this.#outbox = outbox;
  }

  /**
   * Runs a command about server files.
   *
   * @param now current time, ms
   * @param id the command's number
   * @param command the command
   */
  run(now: number, id: number, command: ServerFileCommand): void {
    const token = this.#link.token;
    if (token === undefined) {
      return this.#outbox.fail(
        id,
        command.kind,
        "Not logged in; use register or login first",
        "not_logged_in",
      );
    }
    switch (command.kind) {
      case "files": {
        const body = { type: "files", token } as const;
        this.#link.ask(
          now,
          id,
          { command: "files", body, via: "tcp", expect: "file_list" },
          (_, reply) => {
            this.#outbox.result(id, {
              ok: true,
              command: "files",
              files: reply.files.map((f) => ({
                name: f.name,
                size: f.size,
                sha256: toHex(f.sha256),
                uploadedAt: new Date(f.uploadedAt).toISOString(),
              })),
              usedBytes: reply.usedBytes,
              quotaBytes: reply.quotaBytes,
            });
          },
        );
        return;
      }
      case "delete": {
        const { name } = command;
        const body = { type: "delete", token, name } as const;
        this.#link.ask(
          now,
          id,
          { command: "delete", body, via: "tcp", expect: "delete_ok" },
          () => {
            this.#outbox.result(id, { ok: true, command: "delete", name });
          },
        );
        return;
      }
      case "download": {
        const { name } = command;
        const body = { type: "download", token, name } as const;
        this.#link.ask(
          now,
          id,
          { command: "download", body, via: "tcp", expect: "download_ok" },
          (_, reply, reqId) => {
            this.#outbox.result(id, {
              ok: true,
              command: "download",
              name,
              size: reply.size,
              sha256: toHex(reply.sha256),
              reqId,
            });
          },
        );
        return;
      }
      case "upload": {
        const { name, size, sha256 } = command;
        const problem = fileNameProblem(name);
        if (problem !== undefined) {
          return this.#outbox.fail(id, "upload", problem, "invalid_file_name");
        }
        const extraMs = Math.ceil(size / (1024 * 1024)) * UPLOAD_MS_PER_MIB;
        const body = { type: "upload", token, name, size, sha256 } as const;
        this.#link.ask(now, id, {
          command: "upload",
          body,
          via: "tcp",
          expect: "upload_ok",
          extraMs,
        }, (_, reply) => {
          this.#outbox.result(id, { ok: true, command: "upload", name, size: reply.size });
        });
        return;
      }
    }
  }
}
