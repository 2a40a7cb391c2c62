// A real yjs + y-websocket client, driven by JSON lines on stdin; events as JSON lines on stdout.
// Usage: node client.mjs <ws-base-url> <session-id> <token> [name]
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [base, room, token, name = 'node'] = process.argv.slice(2)
const doc = new Y.Doc()
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const params = token ? { token } : {}
const provider = new WebsocketProvider(base, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
  params,
  maxBackoffTime: 300,
})
provider.awareness.setLocalState({ user: { name } })

provider.on('status', (e) => emit({ event: 'status', status: e.status }))
provider.on('sync', (synced) => emit({ event: 'sync', synced }))
provider.on('connection-close', (e) => emit({ event: 'connection-close', code: e ? e.code : null, reason: e ? e.reason : null }))
provider.on('closed', () => emit({ event: 'closed' }))
doc.on('update', () => emit({ event: 'update' }))
provider.awareness.on('change', () => emit({ event: 'awareness' }))

const snapshot = () => ({
  session: doc.getMap('session').toJSON(),
  tracks: doc.getMap('tracks').toJSON(),
  trackOrder: doc.getArray('trackOrder').toJSON(),
})

const handlers = {
  set: ({ map, key, value }) => doc.getMap(map).set(key, value),
  addTrack: ({ id, name }) => doc.transact(() => {
    const t = new Y.Map()
    t.set('name', name); t.set('kind', 'audio'); t.set('gainDb', 0); t.set('pan', 0)
    t.set('mute', false); t.set('solo', false); t.set('clips', new Y.Map())
    doc.getMap('tracks').set(id, t)
    doc.getArray('trackOrder').push([id])
  }),
  renameTrack: ({ id, name }) => doc.getMap('tracks').get(id).set('name', name),
  get: () => snapshot(),
  states: () => [...provider.awareness.getStates().entries()].map(([id, s]) => ({ id, ...s })),
  clientId: () => doc.clientID,
  disconnect: () => provider.disconnect(),
  connect: () => provider.connect(),
  shouldConnect: () => provider.shouldConnect,
  exit: () => { provider.destroy(); setTimeout(() => process.exit(0), 20) },
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let req
  try { req = JSON.parse(line) } catch { return emit({ error: 'bad json' }) }
  try {
    const result = handlers[req.cmd](req)
    emit({ reply: req.rid, result: result === undefined ? null : result })
  } catch (err) {
    emit({ reply: req.rid, error: String(err) })
  }
})
emit({ event: 'started', clientId: doc.clientID })
