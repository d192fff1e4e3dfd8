// One node of a clustered aedes MQTT broker for tests/tests/cluster.rs.
//
// Usage: node node.mjs NODE_ID MQTT_PORT REDIS_PORT
//
// Every node of the cluster runs this script with its own NODE_ID and MQTT_PORT and the same
// REDIS_PORT: mqemitter-redis carries every publish (and aedes's own `$SYS/<id>/new/clients`
// announcement, which closes a client id's connection on the other nodes) through redis
// pub/sub, and aedes-persistence-redis keeps subscriptions, sessions, QoS 1/2 messages in
// flight and retained messages in redis, so a client finds its session on any node.
//
// Prints `listening NODE_ID MQTT_PORT` on stdout once the node accepts MQTT clients on
// 127.0.0.1:MQTT_PORT, and stops cleanly on SIGTERM or SIGINT (and when its stdin closes, so that
// a test process that dies cannot leave it behind).

import net from 'node:net'
import { Aedes } from 'aedes'
import mqemitterRedis from 'mqemitter-redis'
import aedesPersistenceRedis from 'aedes-persistence-redis'

const [id, mqttPort, redisPort] = process.argv.slice(2)
if (!id || !Number(mqttPort) || !Number(redisPort)) {
  console.error('usage: node node.mjs NODE_ID MQTT_PORT REDIS_PORT')
  process.exit(2)
}

const redis = { host: '127.0.0.1', port: Number(redisPort) }
const mq = mqemitterRedis(redis)
const persistence = aedesPersistenceRedis(redis)

function fail (what, err) {
  console.error(`node ${id}: ${what}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

// Redis gone: this node cannot be part of the cluster any more; exit so the harness sees it.
mq.state.on('error', (err) => fail('mqemitter-redis', err))

const broker = await Aedes.createBroker({ id, mq, persistence }).catch((err) =>
  fail('start', err)
)
broker.on('connectionError', (client, err) => {
  console.error(`node ${id}: connection error of ${client && client.id}: ${err.message}`)
})

const server = net.createServer(broker.handle)
server.on('error', (err) => fail('listen', err))
server.listen(Number(mqttPort), '127.0.0.1', () => {
  console.log(`listening ${id} ${mqttPort}`)
})

let stopping = false
function stop () {
  if (stopping) return
  stopping = true
  server.close()
  broker.close(() => process.exit(0))
  // Whatever hangs in the close, do not outlive the test.
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('error', stop)
process.stdin.resume()
