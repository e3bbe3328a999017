/**
 * Keeps the worked example of docs/SECURE_CHANNEL.md true: the transport
 * datagram shown there decodes, and opens with the keys of the cacophony
 * IK vector it claims to come from.
 */
import { assertEquals } from "@std/assert";
import { fromHex } from "../lib/hex.ts";
import type { Random } from "../lib/random.ts";
import { HandshakeState } from "../lib/crypto/handshake_state.ts";
import { keyPairFromPrivateKey } from "../lib/crypto/key_pair.ts";
import { decodeSecureDatagram } from "../lib/crypto/secure_datagram.ts";
import { TransportSession } from "../lib/crypto/transport_session.ts";

const DOC = await Deno.readTextFile(new URL("../docs/SECURE_CHANNEL.md", import.meta.url));

/** The bytes of the hex block after a `<!-- label -->` comment; a label after two spaces. */
function example(label: string): Uint8Array {
  const lines = DOC.split("\n");
  const at = lines.indexOf(`<!-- ${label} -->`);
  if (at < 0) throw new Error(`docs/SECURE_CHANNEL.md has no <!-- ${label} --> block`);
  const start = lines.indexOf("```", at) + 1;
  const end = lines.indexOf("```", start);
  const hex = lines.slice(start, end).map((line) => line.split(/\s{2,}/)[0].replaceAll(" ", ""));
  return fromHex(hex.join(""));
}

Deno.test("SECURE_CHANNEL.md: the transport example opens with the cacophony IK keys", async () => {
  const vectors = JSON.parse(
    await Deno.readTextFile(new URL("./crypto_noise_vectors.json", import.meta.url)),
  ).vectors;
  const v = vectors.find((x: { protocol_name: string; source: string }) =>
    x.protocol_name === "Noise_IK_25519_ChaChaPoly_SHA256" && x.source.includes("cacophony")
  );
  const once = (hex: string): Random => ({ next: () => 0, bytes: () => fromHex(hex) });
  const initiator = new HandshakeState({
    pattern: "IK",
    initiator: true,
    staticKeyPair: keyPairFromPrivateKey(fromHex(v.init_static)),
    remoteStaticKey: fromHex(v.init_remote_static),
    prologue: fromHex(v.init_prologue),
    random: once(v.init_ephemeral),
  });
  const responder = new HandshakeState({
    pattern: "IK",
    initiator: false,
    staticKeyPair: keyPairFromPrivateKey(fromHex(v.resp_static)),
    prologue: fromHex(v.resp_prologue),
    random: once(v.resp_ephemeral),
  });
  responder.readMessage(initiator.writeMessage(fromHex(v.messages[0].payload)));
  initiator.readMessage(responder.writeMessage(fromHex(v.messages[1].payload)));
  const datagram = decodeSecureDatagram(example("transport-example"));
  if (datagram.kind !== "transport") throw new Error(`the example is a ${datagram.kind}`);
  assertEquals([datagram.receiver, datagram.counter], [42, 0]);
  const session = new TransportSession(responder.split(), { now: 0, initiator: false });
  const plain = session.open(datagram.counter, datagram.ciphertext, 0);
  assertEquals(new TextDecoder().decode(plain), "F. A. Hayek");
});
