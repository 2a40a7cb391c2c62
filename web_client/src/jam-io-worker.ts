// The jam's socket and codecs, in a dedicated Worker (see jamlink.ts for why). The page starts
// it, hands it a MessagePort to the AudioWorklet, and relays control: text frames go to the page
// as they come, and the page's text frames, codec choices and leaving come here.

import { webCodecsOf } from './jamcodecio';
import { JamLink, type CodecChoice, type LinkCounters } from './jamlink';

/** Page → worker. */
export type ToJamIo =
  | { type: 'open'; url: string; worklet: MessagePort }
  | { type: 'text'; text: string }
  | { type: 'codec'; choice: CodecChoice }
  | { type: 'leave' };

/** Worker → page. */
export type FromJamIo =
  | { type: 'open' }
  | { type: 'text'; text: string }
  | { type: 'fallback'; reason: string }
  | { type: 'counters'; counters: LinkCounters }
  | { type: 'closed'; code: number; reason: string };

/** The worklet's side of its port: one's blocks in, the mix out. */
type FromWorklet = { type: 'block'; samples: Float32Array<ArrayBuffer> };

const COUNTERS_MS = 250;
const CLOSE_GRACE_MS = 2000;

function post(m: FromJamIo): void {
  self.postMessage(m);
}

let ws: WebSocket | null = null;
let link: JamLink | null = null;
let port: MessagePort | null = null;
let timer: ReturnType<typeof setInterval> | undefined;

function open(url: string, worklet: MessagePort): void {
  const socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  ws = socket;
  port = worklet;
  const l = new JamLink(socket, webCodecsOf(globalThis), {
    mix: (stereo) => worklet.postMessage({ type: 'mix', samples: stereo }, [stereo.buffer]),
    fallback: (reason) => post({ type: 'fallback', reason }),
  });
  link = l;
  worklet.onmessage = (e: MessageEvent<FromWorklet>) => {
    if (e.data.type === 'block') l.block(e.data.samples);
  };
  socket.onopen = () => post({ type: 'open' });
  socket.onmessage = (e: MessageEvent<ArrayBuffer | string>) => {
    if (typeof e.data === 'string') post({ type: 'text', text: e.data });
    else l.received(e.data);
  };
  socket.onclose = (e) => {
    post({ type: 'counters', counters: l.counters });
    post({ type: 'closed', code: e.code, reason: e.reason });
    shut();
  };
  timer = setInterval(() => post({ type: 'counters', counters: l.counters }), COUNTERS_MS);
}

/** Stop the audio; close the socket (a clean close unless it never opened); end the worker
 *  once the socket has closed, or after a grace for a server that does not answer the close. */
function shut(): void {
  clearInterval(timer);
  link?.close();
  link = null;
  if (port) port.onmessage = null;
  port?.close();
  port = null;
  const s = ws;
  ws = null;
  if (s === null || s.readyState === WebSocket.CLOSED) {
    self.close();
    return;
  }
  s.onopen = s.onmessage = null;
  s.onclose = () => self.close();
  setTimeout(() => self.close(), CLOSE_GRACE_MS);
  if (s.readyState === WebSocket.OPEN) s.close(1000);
  else if (s.readyState === WebSocket.CONNECTING) s.close();
}

self.onmessage = (e: MessageEvent<ToJamIo>) => {
  const m = e.data;
  switch (m.type) {
    case 'open':
      open(m.url, m.worklet);
      break;
    case 'text':
      if (ws?.readyState === WebSocket.OPEN) ws.send(m.text);
      break;
    case 'codec':
      link?.choose(m.choice);
      break;
    case 'leave':
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'leave' }));
      shut();
      break;
    default:
      break;
  }
};
