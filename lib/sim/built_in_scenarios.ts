/**
 * The simulator's built-in scenarios, embedded so that a compiled simulator
 * needs no files. `scenarios/*.sim` holds the same text for users to copy;
 * a test keeps the two equal.
 *
 * @module
 */

/**
 * The built-in scenarios by name: `chat`, `crowd`, `harsh` and `nats` (the `kcp`
 * comparison is not a scenario file; `scripts/simulate.ts` runs it).
 *
 * @example
 * ```ts
 * const scenario = parseScenario(BUILT_IN_SCENARIOS.chat, "chat");
 * ```
 */
export const BUILT_IN_SCENARIOS: Readonly<Record<string, string>> = {
  chat: `# chat: two clients register, connect peer to peer, exchange 300 messages
# each way and terminate, on a network with a little loss, duplication and
# reordering.
loss 2%
duplicate 1%
reorder 2%
delay 5 40

alice: register
bob: register
settle

bob: connect alice
alice: accept bob
repeat 300 alice: send from alice {i}
repeat 300 bob: send from bob {i}
alice: wait messages 300 from bob within 300
bob: wait messages 300 from alice within 300
bob: terminate alice
alice: wait terminate from bob within 60
`,
  crowd: `# crowd: many clients register and watch who comes and goes; every third is
# killed, and the others list who is online after the lease. --clients N
# sets how many (default 20).
loss 5%
duplicate 2%
reorder 5%
delay 5 60
lease 10s

clients 20 node
node-*: register
settle
node-*: watch
settle

kill node-* every 3
advance 20s
node-*: list
node-* every 4: lookup node-1
`,
  harsh: `# harsh: a hostile network. 30% loss in bursts of 3, 20% duplication and
# reordering, a partition that heals, a server crash and restart, and a
# peer chat through all of it.
loss 30% burst 3
duplicate 20%
reorder 20%
delay 1 120

alice: register
bob: register
carol: register
carol: watch
settle

bob: connect alice
alice: accept bob
repeat 50 alice: send from alice {i}
repeat 50 bob: send from bob {i}
advance 3s

partition alice bob         # the peers lose each other for 5 s
partition carol -> server   # carol's heartbeats stop reaching the server
advance 5s
heal

crash server
advance 2s
restart server
dave: register
advance 10s

alice: wait messages 50 from bob within 120
bob: wait messages 50 from alice within 120
bob: terminate alice
carol: list
`,
  nats: `# nats: pairs of clients behind NATs of every kind chat through the server's
# introductions: direct where the NATs allow it, through the server's relay
# where they do not (port-restricted with symmetric), on a network with a
# little loss; halfway through, every NAT forgets its state.
loss 2%
duplicate 1%
reorder 2%
delay 5 40

nat cone full-cone
nat sym symmetric
nat port symmetric
nat hard port-restricted
nat addr address-restricted
nat rest port-restricted
nat home-a port-restricted lan home
nat home-b port-restricted lan home
*: register
settle

cone: connect sym
sym: accept cone
hard: connect port
port: accept hard
addr: connect rest
rest: accept addr
home-a: connect home-b
home-b: accept home-a
settle

repeat 40 cone: send from cone {i}
repeat 40 sym: send from sym {i}
repeat 40 hard: send from hard {i}
repeat 40 port: send from port {i}
repeat 40 addr: send from addr {i}
repeat 40 rest: send from rest {i}
repeat 40 home-a: send from home-a {i}
repeat 40 home-b: send from home-b {i}
advance 500ms
flush nats
cone: wait messages 40 from sym within 120
sym: wait messages 40 from cone within 120
hard: wait messages 40 from port within 120
port: wait messages 40 from hard within 120
addr: wait messages 40 from rest within 120
rest: wait messages 40 from addr within 120
home-a: wait messages 40 from home-b within 120
home-b: wait messages 40 from home-a within 120
cone: terminate sym
hard: terminate port
addr: terminate rest
home-a: terminate home-b
`,
};
