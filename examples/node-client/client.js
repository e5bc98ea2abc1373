#!/usr/bin/env node
// A thin confab client: it holds its own Ed25519 key, authenticates to a
// rendezvous's WebSocket gateway by signing the welcome nonce, joins a
// channel, signs and publishes one envelope, and prints what arrives.
//
//   node client.js --url ws://HOST:PORT/ --channel '#general' --content 'hi' \
//     [--name NAME] [--secret-file F] [--key-file F] [--wait SECONDS] [--until-from-other]
//
// Output: JSON lines on stdout ({"event":"authenticated"|"ack"|"message"|"error",...}).
// The wire protocol is docs/protocol.md (gateway, remote mode); the signed
// bytes are those of mesh/envelope.go and wsgateway.AuthBytes.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const WebSocket = require('ws');

// ---- arguments ----
function parseArgs(argv) {
  const o = { name: 'node-client', wait: 10, untilFromOther: false };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--url': o.url = next(); break;
      case '--channel': o.channel = next(); break;
      case '--content': o.content = next(); break;
      case '--name': o.name = next(); break;
      case '--secret-file': o.secret = fs.readFileSync(next(), 'utf8').trim(); break;
      case '--key-file': o.keyFile = next(); break;
      case '--wait': o.wait = Number(next()); break;
      case '--until-from-other': o.untilFromOther = true; break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!o.url || !o.channel) throw new Error('--url and --channel are required');
  return o;
}

// ---- identity ----

// A key in PKCS#8 PEM, kept in --key-file if given so the identity is stable.
function loadKey(file) {
  if (file && fs.existsSync(file)) return crypto.createPrivateKey(fs.readFileSync(file));
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  if (file) fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return privateKey;
}

function rawPublicKey(privateKey) {
  const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
  return Buffer.from(jwk.x, 'base64url'); // 32 bytes
}

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
function base58btc(buf) {
  let n = BigInt('0x' + (buf.length ? buf.toString('hex') : '0'));
  let s = '';
  while (n > 0n) { s = B58[Number(n % 58n)] + s; n /= 58n; }
  for (const b of buf) { if (b !== 0) break; s = '1' + s; }
  return s;
}

// libp2p peer id of an Ed25519 key: the identity multihash (0x00, length
// 0x24) of the protobuf PublicKey {Type: Ed25519 (0x08 0x01), Data: key
// (0x12 0x20 ...)}, in base58btc. It starts with "12D3KooW".
function peerId(pub) {
  return base58btc(Buffer.concat([Buffer.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]), pub]));
}

// ---- fixed encodings (never JSON) ----
function field(v) {
  const b = Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}
function u64(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

// wsgateway.AuthBytes
function authBytes(nonce, gateway, client) {
  return Buffer.concat([field('confab/gateway-auth/v1'), field(nonce), field(gateway), field(client)]);
}

// mesh.Envelope.SigningBytes
function signingBytes(e) {
  return Buffer.concat([
    field('confab/envelope/v1'), field(e.channel), field(e.from), field(e.name),
    u64(e.seq), u64(e.ts), field(e.kind), field(e.content), field(e.reply_to || ''),
  ]);
}

function signEnvelope(e, key) {
  const b = signingBytes(e);
  e.id = crypto.createHash('sha256').update(b).digest('hex');
  e.sig = crypto.sign(null, b, key).toString('base64');
  return e;
}

function verifyEnvelope(e) {
  try {
    const pid = Buffer.from(base58decode(e.from));
    if (pid.length !== 38 || pid.subarray(0, 6).compare(Buffer.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])) !== 0) return false;
    const pub = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: pid.subarray(6).toString('base64url') }, format: 'jwk' });
    const b = signingBytes(e);
    return crypto.createHash('sha256').update(b).digest('hex') === e.id &&
      crypto.verify(null, b, pub, Buffer.from(e.sig, 'base64'));
  } catch {
    return false;
  }
}

function base58decode(s) {
  let n = 0n;
  for (const c of s) {
    const i = B58.indexOf(c);
    if (i < 0) throw new Error('bad base58');
    n = n * 58n + BigInt(i);
  }
  let hex = n.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  const body = n === 0n ? Buffer.alloc(0) : Buffer.from(hex, 'hex');
  let zeros = 0;
  while (zeros < s.length && s[zeros] === '1') zeros++;
  return Buffer.concat([Buffer.alloc(zeros), body]);
}

// ---- protocol ----
function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

async function main() {
  const o = parseArgs(process.argv);
  const key = loadKey(o.keyFile);
  const me = peerId(rawPublicKey(key));
  const ws = new WebSocket(o.url, { maxPayload: 16 << 20 });
  let nextReq = 0;
  const pending = new Map();
  let welcome;
  const welcomed = new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('message', (data) => { welcome = JSON.parse(data); resolve(); });
  });
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  ws.on('close', (code, reason) => { out({ event: 'closed', code, reason: reason.toString() }); finish(code === 1000 ? 0 : 1); });

  function call(frame) {
    const req = String(++nextReq);
    return new Promise((resolve, reject) => {
      pending.set(req, { resolve, reject });
      ws.send(JSON.stringify({ ...frame, req }));
    });
  }

  await welcomed;
  if (welcome.type !== 'welcome' || welcome.v !== 1 || welcome.mode !== 'remote') throw new Error('unexpected welcome ' + JSON.stringify(welcome));
  ws.on('message', (data) => {
    const f = JSON.parse(data);
    if (f.type === 'event') {
      const e = f.record.envelope;
      out({ event: 'message', verified: verifyEnvelope(e), cursor: f.record.cursor, replay: f.replay, envelope: e });
      if (o.untilFromOther && e.from !== me) ws.close(1000);
      return;
    }
    const p = f.req && pending.get(f.req);
    if (p) {
      pending.delete(f.req);
      if (f.type === 'error') p.reject(Object.assign(new Error(`${f.code}: ${f.message || ''}`), { frame: f }));
      else p.resolve(f);
    } else if (f.type === 'error') {
      out({ event: 'error', code: f.code, message: f.message });
    }
  });

  const nonce = Buffer.from(welcome.nonce, 'base64');
  const sig = crypto.sign(null, authBytes(nonce, welcome.node, me), key).toString('base64');
  await call({ type: 'auth', peer: me, sig, ...(o.secret ? { secret: o.secret } : {}) });
  out({ event: 'authenticated', peer: me, gateway: welcome.node });

  await call({ type: 'join', channel: o.channel });
  await call({ type: 'subscribe', channels: [o.channel] });

  if (o.content !== undefined) {
    const { next } = await call({ type: 'seq', channel: o.channel });
    const env = signEnvelope({
      channel: o.channel, from: me, name: o.name, seq: next, ts: Date.now(),
      kind: 'msg', content: o.content, reply_to: '',
    }, key);
    delete env.reply_to; // omitted when empty, as in Go's JSON
    const ack = await call({ type: 'publish', envelope: env });
    out({ event: 'ack', id: ack.id, seq: ack.seq, cursor: ack.cursor });
  }
  const timer = setTimeout(() => ws.close(1000), o.wait * 1000);
  const code = await done;
  clearTimeout(timer);
  return code;
}

main().then((code) => process.exit(code), (err) => {
  out({ event: 'error', message: err.message });
  process.exit(1);
});
