/**
 * Switchboard's version, printed by `--version`, sent in `hello_ok` and
 * served by `/healthz` and `switchboard_build_info`. The one place it is
 * defined; CHANGELOG.md's newest section names the same version (a test
 * keeps them together). `-dev` marks work after the last release (0.3.0).
 */
export const VERSION = "0.4.0-dev";
