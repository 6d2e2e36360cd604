// kafkajs 2.2.4 (a Kafka client in JavaScript, speaking its own choice of API versions)
// against Weir's Kafka listener.
//
// Usage: node kafkajs_client.js BOOTSTRAP TOPIC
// - admin: creates TOPIC with six partitions and a config, describes and alters it, adds
//   nothing twice;
// - produces 600 records with keys, headers and timestamps (half of them gzip-compressed);
// - two consumers of one group share the six partitions and read every record exactly once,
//   committing as they go; the group is listed and described while they run;
// - deletes records below offset 10 of partition 0, then the group and a second topic.
// Leaves TOPIC and group "kafkajs-group" (deleted) for the caller. Exit 0 when all is well;
// every wait has a deadline (the whole script: 150 s).
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
const failures = []
setTimeout(() => {
  console.error('not done within 150 s', failures)
  process.exit(2)
}, 150_000).unref()

const kafka = new Kafka({
  clientId: 'weir-test',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  retry: { retries: 8 }
})

async function waitFor (what, condition, seconds = 60) {
  const deadline = Date.now() + seconds * 1000
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not within ${seconds} s: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  const made = await admin.createTopics({
    topics: [
      { topic, numPartitions: 6, configEntries: [{ name: 'retention.ms', value: '3600000' }] },
      { topic: `${topic}-gone`, numPartitions: 1 }
    ],
    waitForLeaders: true
  })
  if (!made) failures.push('createTopics said nothing was created')
  const again = await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
  if (again) failures.push('a second create of the same topic succeeded')

  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: 2, name: topic, configNames: ['retention.ms'] }]
  })
  const retention = described.resources[0].configEntries.find(c => c.configName === 'retention.ms')
  if (!retention || retention.configValue !== '3600000') failures.push(`retention.ms described as ${JSON.stringify(retention)}`)
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: 2, name: topic, configEntries: [{ name: 'retention.ms', value: '7200000' }] }]
  })
  const altered = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: 2, name: topic, configNames: ['retention.ms'] }]
  })
  const value = altered.resources[0].configEntries[0].configValue
  if (value !== '7200000') failures.push(`retention.ms after alterConfigs: ${value}`)

  // Records with keys, headers and timestamps; the second half gzip-compressed.
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  for (const compression of [CompressionTypes.None, CompressionTypes.GZIP]) {
    const base = compression === CompressionTypes.None ? 0 : 300
    await producer.send({
      topic,
      acks: -1,
      compression,
      messages: Array.from({ length: 300 }, (_, i) => ({
        key: `k${base + i}`,
        value: `v${base + i}`,
        partition: (base + i) % 6,
        timestamp: String(1_700_000_000_000 + base + i),
        headers: { n: String(base + i) }
      }))
    })
  }
  await producer.disconnect()

  // Two members of one group share the partitions; every record once.
  const seen = new Map()
  const group = 'kafkajs-group'
  const consumers = [kafka.consumer({ groupId: group, sessionTimeout: 10_000, heartbeatInterval: 500 }),
    kafka.consumer({ groupId: group, sessionTimeout: 10_000, heartbeatInterval: 500 })]
  for (const [n, consumer] of consumers.entries()) {
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const id = `${partition}/${message.offset}`
        const expected = `v${message.headers.n.toString()}`
        if (message.value.toString() !== expected || message.key.toString() !== `k${message.headers.n}` ||
            message.timestamp !== String(1_700_000_000_000 + Number(message.headers.n))) {
          failures.push(`record ${id}: ${message.key} ${message.value} ${message.timestamp}`)
        }
        seen.set(id, (seen.get(id) || []).concat([n]))
      }
    })
  }
  await waitFor('both members read', async () => {
    const readers = new Set([...seen.values()].flat())
    return readers.size === 2 && seen.size >= 600
  }, 90)
  const groups = await admin.listGroups()
  if (!groups.groups.some(g => g.groupId === group)) failures.push(`listed groups: ${JSON.stringify(groups)}`)
  const groupDescribed = await admin.describeGroups([group])
  const members = groupDescribed.groups[0].members
  if (members.length !== 2) failures.push(`the group described with ${members.length} members`)
  for (const consumer of consumers) await consumer.disconnect()
  const twice = [...seen.entries()].filter(([, readers]) => readers.length > 1)
  if (seen.size !== 600 || twice.length) failures.push(`read ${seen.size} records, ${twice.length} twice`)
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] })
  const offsets = committed[0].partitions.map(p => Number(p.offset)).sort()
  if (JSON.stringify(offsets) !== JSON.stringify([100, 100, 100, 100, 100, 100])) failures.push(`committed offsets ${offsets}`)

  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '10' }] })
  const low = await admin.fetchTopicOffsets(topic)
  const p0 = low.find(p => p.partition === 0)
  if (p0.low !== '10' || p0.high !== '100') failures.push(`partition 0 after deleting records: ${JSON.stringify(p0)}`)
  await admin.deleteGroups([group])
  await admin.deleteTopics({ topics: [`${topic}-gone`] })
  const topics = await admin.listTopics()
  if (topics.includes(`${topic}-gone`) || !topics.includes(topic)) failures.push(`topics after: ${topics}`)
  await admin.disconnect()
}

main().then(() => {
  if (failures.length) {
    console.error(failures.join('\n'))
    process.exit(1)
  }
  console.log('ok')
  process.exit(0)
}, e => {
  console.error(e.stack || e, failures)
  process.exit(1)
})
