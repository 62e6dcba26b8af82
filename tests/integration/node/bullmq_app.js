// A Node BullMQ producer or consumer instrumented with bullmq-otel, exporting OTLP (protobuf over HTTP)
// to the collector named by OTEL_EXPORTER_OTLP_ENDPOINT. Used by tests/integration/test_instrument_bullmq.py.
//
//   node bullmq_app.js produce '{"redis": {"host": "127.0.0.1", "port": 6379}, "queue": "q", "correlation_id": "c"}'
//   node bullmq_app.js consume '{"redis": {...}, "queue": "q", "count": 1, "fail_first": false}'
//   node bullmq_app.js produce_batch '{"redis": {...}, "queue": "q", "correlation_id": "c"}'  (addBulk of 3 + a flow)
//
// Prints one JSON line with what it did. Every wait is bounded.
'use strict';

const { NodeSDK } = require('@opentelemetry/sdk-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const api = require('@opentelemetry/api');
const { FlowProducer, Queue, Worker } = require('bullmq');
const { BullMQOtel } = require('bullmq-otel');

const DEADLINE_MS = 30000;

// Spans are batched and flushed by sdk.shutdown() before the result line is printed.
const sdk = new NodeSDK({ traceExporter: new OTLPTraceExporter(), instrumentations: [] });
sdk.start();

function ids(span) {
  const ctx = span.spanContext();
  return { trace_id: ctx.traceId, span_id: ctx.spanId };
}

async function produce(args) {
  const queue = new Queue(args.queue, { connection: args.redis, telemetry: new BullMQOtel({ tracerName: 'node-producer' }) });
  const tracer = api.trace.getTracer('node-producer-app');
  // The business correlation ID travels in W3C baggage, where otelkit looks for it.
  const bag = api.propagation.createBaggage({ correlation_id: { value: args.correlation_id } });
  const ctx = api.propagation.setBaggage(api.context.active(), bag);
  const result = await api.context.with(ctx, () => tracer.startActiveSpan('node-publish', async (span) => {
    const job = await queue.add('enrich', { token: 'tok-node' }, { attempts: 2 });
    span.end();
    return { job_id: job.id, ...ids(span) };
  }));
  await queue.close();
  return result;
}

async function produceBatch(args) {
  const telemetry = new BullMQOtel({ tracerName: 'node-producer' });
  const queue = new Queue(args.queue, { connection: args.redis, telemetry });
  const flows = new FlowProducer({ connection: args.redis, telemetry });
  const tracer = api.trace.getTracer('node-producer-app');
  const bag = api.propagation.createBaggage({ correlation_id: { value: args.correlation_id } });
  const ctx = api.propagation.setBaggage(api.context.active(), bag);
  const result = await api.context.with(ctx, () => tracer.startActiveSpan('node-batch', async (span) => {
    const bulk = await queue.addBulk([0, 1, 2].map((i) => ({ name: 'enrich', data: { token: `tok-b${i}` } })));
    // bullmq 6.7.6 writes the trace context only into flow nodes that have `opts`: each node gets some.
    const tree = await flows.add({ name: 'report', queueName: args.queue, data: { token: 'tok-parent' }, opts: {},
      children: [0, 1].map((i) => ({ name: 'part', queueName: args.queue, data: { token: `tok-c${i}` }, opts: {} })) });
    span.end();
    return { bulk: bulk.map((job) => job.id), flow: [tree.job.id, ...tree.children.map((c) => c.job.id)], ...ids(span) };
  }));
  await queue.close();
  await flows.close();
  return result;
}

async function consume(args) {
  const seen = [];
  let worker;
  const done = new Promise((resolve) => {
    worker = new Worker(args.queue, async (job) => {
      const span = api.trace.getActiveSpan();
      const baggage = api.propagation.getActiveBaggage();
      const entry = baggage ? baggage.getEntry('correlation_id') : undefined;
      seen.push({ job_id: job.id, attempts_made: job.attemptsMade, correlation_id: entry ? entry.value : null,
        ...(span ? ids(span) : {}) });
      if (seen.length >= args.count) resolve();
      if (args.fail_first && seen.length === 1) throw new Error('first attempt fails');
      return 'ok';
    }, { connection: args.redis, telemetry: new BullMQOtel({ tracerName: 'node-consumer' }) });
  });
  let timeout;
  const timer = new Promise((resolve) => { timeout = setTimeout(resolve, DEADLINE_MS); });
  await Promise.race([done, timer]);
  clearTimeout(timeout);
  await worker.close();
  return { jobs: seen };
}

async function main() {
  const [role, raw] = process.argv.slice(2);
  const args = JSON.parse(raw);
  const roles = { produce, produce_batch: produceBatch, consume };
  const result = await roles[role](args);
  await sdk.shutdown().catch((err) => process.stderr.write('otel shutdown: ' + err + '\n'));
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch(async (err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
