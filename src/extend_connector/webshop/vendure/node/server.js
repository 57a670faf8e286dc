// Start (and on first run, seed) the Vendure shop; prints `VENDURE READY on <port>` when it serves.
'use strict';
process.env.VENDURE_DISABLE_TELEMETRY = process.env.VENDURE_DISABLE_TELEMETRY || 'true';
const fs = require('fs');
const path = require('path');
const { bootstrap, JobQueueService, dummyPaymentHandler } = require('@vendure/core');
const { populate } = require('@vendure/core/cli');
const { config } = require('./vendure-config');

const initialData = {
  defaultLanguage: 'en',
  defaultZone: 'Europe',
  countries: [
    { name: 'Sweden', code: 'SE', zone: 'Europe' },
    { name: 'Norway', code: 'NO', zone: 'Europe' },
  ],
  taxRates: [{ name: 'Standard Tax', percentage: 25 }],
  shippingMethods: [{ name: 'Standard Shipping', price: 4900 }],
  paymentMethods: [{
    name: 'Test Payment',
    handler: { code: dummyPaymentHandler.code, arguments: [{ name: 'automaticSettle', value: 'true' }] },
  }],
  collections: [],
};

(async () => {
  const started = Date.now();
  const db = config.dbConnectionOptions;
  const dataDir = process.env.VENDURE_DATA_DIR || __dirname;
  const marker = path.join(dataDir,
    `.seeded-${(db.url || db.location).replace(/[^A-Za-z0-9]+/g, '_').slice(-80)}`);
  if (!fs.existsSync(marker)) {
    // seed on an ephemeral port: /health on the real port answers only once the shop is up
    const app = await populate(
      () => bootstrap({ ...config, apiOptions: { ...config.apiOptions, port: 0 } }), initialData);
    await app.close();
    fs.writeFileSync(marker, new Date().toISOString());
    console.log(`seeded in ${Date.now() - started} ms`);
  }
  const app = await bootstrap(config);
  await app.get(JobQueueService).start(); // jobs in this process (no separate worker)
  console.log(`VENDURE READY on ${config.apiOptions.port} after ${Date.now() - started} ms`);
  const stop = async () => { await app.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((e) => { console.error(e); process.exit(1); });
