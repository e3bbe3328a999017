import { assertEquals } from "@std/assert";
import { displayWidth, LineEditor } from "../lib/cli/line_editor.ts";

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

Deno.test("LineEditor edits: Backspace, Ctrl+U, Ctrl+W, and ignores escape sequences", () => {
  const editor = new LineEditor(() => 80);
  editor.ask("> ");
  editor.type("send hello wor\x7f\x7f");
  assertEquals(editor.input, "send hello w");
  editor.type("\x17");
  assertEquals(editor.input, "send hello ");
  editor.type("\x17");
  assertEquals(editor.input, "send ");
  // Arrows, Home/End (SS3) and Alt+x change nothing.
  editor.type("\x1b[A\x1b[1;5C\x1bOH\x1bxok\x01\t!");
  assertEquals(editor.input, "send ok !");
  editor.type("é\x7f");
  assertEquals(editor.input, "send ok !");
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
