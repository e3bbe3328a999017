/** Switchboard's version, printed by `--version` and sent in `hello_ok`. */
export const VERSION = "0.2.0";
