import { assertEquals } from "@std/assert";
import { LineEditor } from "../lib/cli/line_editor.ts";
import { LineHistory } from "../lib/cli/line_history.ts";
import { displayWidth } from "../lib/display_width.ts";

const ERASE = "\r\x1b[J";

Deno.test("LineEditor echoes keys and returns a line on Enter, CR LF counted once", () => {
  const editor = new LineEditor(() => 80);
  assertEquals(editor.ask("> "), ERASE + "> ");
  const typed = editor.type("ab\r\ncd\n");
  assertEquals(typed.lines, ["ab", "cd"]);
  assertEquals(typed.ended, false);
  assertEquals(typed.screen, "ab" + ERASE + "> ab\r\n> " + "cd" + ERASE + "> cd\r\n> ");
  assertEquals(editor.input, "");
});

Deno.test("LineEditor.print() writes above the prompt and redraws what was typed", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  editor.type("send hel");
  assertEquals(editor.print("[Bob] hi\nsecond"), ERASE + "[Bob] hi\r\nsecond\r\n> send hel");
  assertEquals(editor.type("lo\r").lines, ["send hello"]);
});

Deno.test("LineEditor.status() keeps one line above the prompt, cut to the width", () => {
  const editor = new LineEditor(() => 10);
  editor.ask("> ");
  editor.type("ab");
  assertEquals(editor.status("0123456789abc"), ERASE + "012345678\r\n> ab");
  // The next redraw goes up over the status line first.
  assertEquals(editor.status("x"), "\r\x1b[1A\x1b[J" + "x\r\n> ab");
  assertEquals(editor.print("done"), "\r\x1b[1A\x1b[J" + "done\r\nx\r\n> ab");
  assertEquals(editor.status(undefined), "\r\x1b[1A\x1b[J" + "> ab");
  assertEquals(editor.close(), ERASE + "> ab\r\n");
});

Deno.test("LineEditor counts the rows of a wrapped input line", () => {
  const editor = new LineEditor(() => 10);
  editor.ask("> ");
  editor.type("12345678"); // exactly one row: the cursor waits at its end
  assertEquals(editor.print("a"), ERASE + "a\r\n> 12345678");
  editor.type("9");
  assertEquals(editor.print("b"), "\r\x1b[1A\x1b[J" + "b\r\n> 123456789");
  editor.type("\x7f");
  assertEquals(editor.print("c"), ERASE + "c\r\n> 12345678");
  // Wide characters take two columns.
  editor.type("\x15日本語日本");
  assertEquals(editor.print("d"), "\r\x1b[1A\x1b[J" + "d\r\n> 日本語日本");
});

Deno.test("LineEditor edits: Backspace, Ctrl+U, Ctrl+W, and ignores other escape sequences", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  editor.type("send hello wor\x7f\x7f");
  assertEquals(editor.input, "send hello w");
  editor.type("\x17");
  assertEquals(editor.input, "send hello ");
  editor.type("\x17");
  assertEquals(editor.input, "send ");
  // Up without a history, Ctrl+Right, F1, Alt+x and Tab without a completer change nothing.
  editor.type("\x1b[A\x1b[1;5C\x1bOP\x1b[11~\x1bxok\t!");
  assertEquals(editor.input, "send ok!");
  editor.type("é\x7f");
  assertEquals(editor.input, "send ok!");
  editor.type("\x15");
  assertEquals(editor.input, "");
});

Deno.test("LineEditor hides a secret answer, on screen and after Enter", () => {
  const editor = new LineEditor(() => 80);
  assertEquals(editor.ask("Password: ", { secret: true }), ERASE + "Password: ");
  const typed = editor.type("hunter2\x7f3\r");
  assertEquals(typed.lines, ["hunter3"]);
  assertEquals(typed.screen.includes("hunter"), false);
  assertEquals(editor.ask("> "), ERASE + "> ");
});

Deno.test("LineEditor ends input on Ctrl+D only on an empty line", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  assertEquals(editor.type("ab\x04").ended, false);
  editor.type("\x15");
  const typed = editor.type("\x04after");
  assertEquals(typed.ended, true);
  assertEquals(editor.input, "");
});

Deno.test("displayWidth() counts wide characters twice and combining marks not at all", () => {
  assertEquals(displayWidth("abc"), 3);
  assertEquals(displayWidth("日本"), 4);
  assertEquals(displayWidth("e\u0301"), 1);
  // Emoji the old hand table missed, and a family (ZWJ sequence) as one wide character.
  assertEquals(displayWidth("🚀✅☕"), 6);
  assertEquals(displayWidth("\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466}"), 2);
});

Deno.test("LineEditor Backspace removes a whole character as seen: emoji, flags, accents", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  const thumb = "\u{1F44D}\u{1F3FD}"; // with a skin tone
  editor.type(`a${thumb}`);
  editor.type("\x7f");
  assertEquals(editor.input, "a");
  editor.type("\u{1F1EB}\u{1F1F7}e\u0301\x7f");
  assertEquals(editor.input, "a\u{1F1EB}\u{1F1F7}");
  editor.type("\x7f\x7f");
  assertEquals(editor.input, "");
});

Deno.test("LineEditor hides what is typed after a line that leads to a secret question", () => {
  const editor = new LineEditor(() => 80, { secretAfter: (line) => line === "login" });
  editor.ask("> ");
  // A paste: the command and the password at once.
  const typed = editor.type("login\rhunter22\r");
  assertEquals(typed.lines, ["login", "hunter22"]);
  assertEquals(typed.screen.includes("hunter"), false, typed.screen);
  // The next question shows normally again.
  assertEquals(editor.ask("> "), ERASE + "> ");
  assertEquals(editor.type("ok").screen, "ok");
});

Deno.test("LineEditor answers a secret question with nothing on Ctrl+D, instead of ending", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("Password: ", { secret: true });
  const typed = editor.type("\x04");
  assertEquals(typed.lines, [""]);
  assertEquals(typed.ended, false);
});

Deno.test("LineEditor.close() leaves a half-typed line on screen, not a bare prompt", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  editor.status("bar");
  editor.type("half");
  assertEquals(editor.close(), "\r\x1b[1A\x1b[J" + "> half\r\n");
  editor.ask("> ");
  assertEquals(editor.close(), ERASE);
  editor.ask("Password: ", { secret: true });
  editor.type("secret");
  assertEquals(editor.close(), ERASE);
});

Deno.test("LineEditor moves the cursor: Left, Right, Home, End, Ctrl+A, Ctrl+E, by whole characters", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  editor.type("send 🚀x");
  // Left over "x", then over the rocket (two UTF-16 units, two columns).
  assertEquals(editor.type("\x1b[D").screen, ERASE + "> send 🚀x" + "\r\x1b[9C");
  assertEquals(editor.type("\x1b[D").screen, ERASE + "> send 🚀x" + "\r\x1b[7C");
  editor.type("!");
  assertEquals(editor.input, "send !🚀x");
  editor.type("\x01"); // Ctrl+A
  assertEquals(editor.cursor, 0);
  editor.type(">");
  editor.type("\x05<"); // Ctrl+E
  assertEquals(editor.input, ">send !🚀x<");
  editor.type("\x1b[H\x1b[3~"); // Home, Delete
  assertEquals(editor.input, "send !🚀x<");
  editor.type("\x1bOF\x1b[D\x1b[D\x1b[D\x7f"); // End (SS3), Left 3 times, Backspace: the "!"
  assertEquals(editor.input, "send 🚀x<");
  editor.type("\x1b[C\x0b"); // Right, Ctrl+K
  assertEquals(editor.input, "send 🚀");
  editor.type("\x1b[1~\x1b[C\x1b[C\x15"); // Home (tilde form), Right twice, Ctrl+U
  assertEquals(editor.input, "nd 🚀");
  assertEquals(editor.type("\r").lines, ["nd 🚀"]);
});

Deno.test("LineEditor puts the cursor on the right row of a wrapped line, wide characters wrapping whole", () => {
  const editor = new LineEditor(() => 10);
  editor.ask("> ");
  editor.type("1234567日本"); // "> 1234567" is 9 columns: 日 wraps whole to the second row
  assertEquals(editor.print("a"), "\r\x1b[1A\x1b[J" + "a\r\n> 1234567日本");
  // Home: up one row from the end, to the column after the prompt.
  assertEquals(
    editor.type("\x01").screen,
    "\r\x1b[1A\x1b[J" + "> 1234567日本" + "\x1b[1A\r\x1b[2C",
  );
  // The cursor is now on the first row: the next redraw goes up no rows.
  assertEquals(editor.print("b"), ERASE + "b\r\n> 1234567日本" + "\x1b[1A\r\x1b[2C");
});

Deno.test("LineEditor walks the history with Up and Down and keeps the line being typed", () => {
  const history = new LineHistory(["list", "send hi"]);
  const editor = new LineEditor(() => 80);
  editor.ask("> ", { history });
  editor.type("half");
  editor.type("\x1b[A");
  assertEquals(editor.input, "send hi");
  editor.type("\x1bOA\x1b[A"); // once more past the oldest changes nothing
  assertEquals(editor.input, "list");
  editor.type("\x1b[B\x1b[B");
  assertEquals(editor.input, "half");
  editor.type("\x15lookup bob\r");
  assertEquals(history.entries, ["list", "send hi", "lookup bob"]);
  // A secret answer and a question without a history are not kept.
  editor.ask("Password: ", { secret: true, history });
  editor.type("hunter2\r");
  editor.ask("Name: ");
  editor.type("Ann\r");
  assertEquals(history.entries, ["list", "send hi", "lookup bob"]);
});

Deno.test("LineEditor keeps no line typed after one that leads to a secret question", () => {
  const history = new LineHistory();
  const editor = new LineEditor(() => 80, { secretAfter: (line) => line === "login" });
  editor.ask("> ", { history });
  editor.type("login\rhunter22\r");
  assertEquals(history.entries, ["login"]);
});

Deno.test("LineHistory is bounded, skips repeats and empty lines, and survives a restart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/history/ann.txt`;
    const history = await LineHistory.load(path, 3);
    for (const line of ["a", "b", "b", " ", "c", "d"]) history.add(line);
    assertEquals(history.entries, ["b", "c", "d"]);
    await history.flush();
    assertEquals((await LineHistory.load(path, 3)).entries, ["b", "c", "d"]);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LineEditor completes on Tab: one choice whole, several to their common start, listed on a second Tab", () => {
  const words = ["send", "sendfile", "status"];
  const editor = new LineEditor(() => 80, {
    complete: (before) => {
      const from = before.search(/[^ @]*$/);
      const typed = before.slice(from);
      return {
        from,
        words: (from === 0 ? words : ["Ann", "Anna Li"]).filter((w) => w.startsWith(typed)),
      };
    },
  });
  editor.ask("> ");
  editor.type("st\t");
  assertEquals(editor.input, "status ");
  editor.type("\x15se\t");
  assertEquals(editor.input, "send");
  assertEquals(editor.type("\t").screen, "");
  assertEquals(editor.type("\t").screen, ERASE + "send  sendfile\r\n> send");
  editor.type(" @A\t");
  assertEquals(editor.input, "send @Ann");
  editor.type("\x15connect A\t");
  assertEquals(editor.input, "connect Ann");
});
