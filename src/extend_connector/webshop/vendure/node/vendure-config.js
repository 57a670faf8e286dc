// The Vendure server the connector's tests and `demo --shop vendure` run: Vendure 3.7 with the
// extend-connector plugin, configured from the environment (plain CommonJS, no build step).
//   VENDURE_PORT            port on 127.0.0.1 (default 3000)
//   VENDURE_DATABASE_URL    postgres://... ; unset: sql.js (SQLite in WASM) in VENDURE_DATA_DIR
//   VENDURE_DATA_DIR        where the sql.js file lives (default: this folder)
//   VENDURE_SUPERADMIN_PASSWORD  (default superadmin)
//   EXTEND_CONNECTOR_URL    where order events go (unset: none; the connector polls)
//   EXTEND_CONNECTOR_WEBHOOK_SECRET  whsec_... shared with the connector's webshop.webhook_secret
'use strict';
const path = require('path');
const { DefaultLogger, LogLevel, dummyPaymentHandler, DefaultJobQueuePlugin } = require('@vendure/core');
const { ExtendConnectorPlugin } = require('./extend-plugin');

const port = Number(process.env.VENDURE_PORT || 3000);
const dataDir = process.env.VENDURE_DATA_DIR || __dirname;
const dbUrl = process.env.VENDURE_DATABASE_URL;
const dbConnectionOptions = dbUrl
  ? { type: 'postgres', url: dbUrl, synchronize: true, logging: false }
  : { type: 'sqljs', location: path.join(dataDir, 'vendure.sqljs'), autoSave: true,
      synchronize: true, logging: false };

exports.config = {
  apiOptions: { hostname: '127.0.0.1', port, adminApiPath: 'admin-api', shopApiPath: 'shop-api' },
  authOptions: {
    tokenMethod: ['bearer', 'cookie'],
    requireVerification: false,
    superadminCredentials: {
      identifier: 'superadmin',
      password: process.env.VENDURE_SUPERADMIN_PASSWORD || 'superadmin',
    },
  },
  dbConnectionOptions,
  paymentOptions: { paymentMethodHandlers: [dummyPaymentHandler] },
  logger: new DefaultLogger({ level: LogLevel.Warn }),
  plugins: [
    DefaultJobQueuePlugin.init({}),
    ExtendConnectorPlugin.init({
      connectorUrl: process.env.EXTEND_CONNECTOR_URL,
      webhookSecret: process.env.EXTEND_CONNECTOR_WEBHOOK_SECRET,
    }),
  ],
};
