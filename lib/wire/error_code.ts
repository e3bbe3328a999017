/**
 * Codes carried by an `error` reply, so a client can react to the reason
 * without parsing the message text.
 */
export const ERROR_CODES = {
  bad_request: 1,
  invalid_name: 2,
  name_taken: 3,
  not_registered: 4,
  bad_token: 5,
  not_saved: 6,
  busy: 7,
  login_failed: 8,
  locked_out: 9,
  not_logged_in: 10,
  not_online: 11,
  not_allowed: 12,
  quota_exceeded: 13,
  file_too_large: 14,
  invalid_file_name: 15,
  file_not_found: 16,
  checksum_mismatch: 17,
  needs_tcp: 18,
  session_replaced: 19,
} as const;

/** The name of an error reply's reason, such as `"name_taken"`. */
export type ErrorCodeName = keyof typeof ERROR_CODES;

const NAMES_BY_CODE = new Map<number, ErrorCodeName>(
  Object.entries(ERROR_CODES).map(([name, code]) => [code, name as ErrorCodeName]),
);

/**
 * Looks up the name of an error code received on the wire.
 *
 * @param code the numeric code from an `error` reply
 * @returns its name, or `"bad_request"` for a code this version does not know
 */
export function errorCodeName(code: number): ErrorCodeName {
  return NAMES_BY_CODE.get(code) ?? "bad_request";
}
