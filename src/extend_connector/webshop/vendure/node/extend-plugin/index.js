// The extend-connector plugin for Vendure 3.7 (plain CommonJS, no build step).
//
// It gives the connector what Vendure does not have built in:
//  1. Order events: when an order is paid (PaymentSettled) or cancelled, a signed Standard Webhook
//     (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) goes to
//     the connector. The event is a trigger only: the connector reads the order through the Admin
//     API and also polls for orders it missed (a connector that is down loses no order).
//  2. Per-customer prices: an `ExtendCustomerPrice` table keyed by (Extend customer number, SKU),
//     written in batches by the connector through the Admin API mutation `setExtendCustomerPrices`,
//     and a price calculation strategy that gives a logged-in customer their price.
//  3. The custom fields `Customer.extendCustomerNumber` (which Extend customer a Vendure customer
//     is), `ProductVariant.extendPhaseOut` (Extend phased the product out: it stays disabled) and
//     `Order.extendOrderNumber` / `Order.extendStatus` (Registered, Reserved, Picked, ... as
//     Extend reports it; public, so a storefront can show it).
//
// Install: copy this folder into your Vendure project (or `npm install <path>`), then add
// `ExtendConnectorPlugin.init({ connectorUrl, webhookSecret })` to `plugins` in vendure-config.
// See docs/webshops/vendure.md in extend-connector.
'use strict';

const crypto = require('crypto');
const { Inject } = require('@nestjs/common');
const { Resolver, Mutation, Query, Args } = require('@nestjs/graphql');
const { parse } = require('graphql');
const { Entity, Column, Index, PrimaryGeneratedColumn, In } = require('typeorm');
const {
  VendurePlugin, PluginCommonModule, EventBus, Logger, TransactionalConnection,
  OrderStateTransitionEvent, Customer, Ctx, Allow, Permission, Transaction,
} = require('@vendure/core');
// not re-exported from the package index in 3.7.3, hence the deep path
const { DefaultProductVariantPriceCalculationStrategy } = require(
  '@vendure/core/dist/config/catalog/default-product-variant-price-calculation-strategy');

const LOG = 'ExtendConnectorPlugin';
// Order states the connector is told about; anything else it learns by polling.
const TOLD_STATES = new Set(['PaymentSettled', 'PaymentAuthorized', 'Cancelled']);
const MAX_PRICES_PER_CALL = 5000;

// ---- per-customer prices ------------------------------------------------------------------
class ExtendCustomerPrice {
  constructor(input) { if (input) Object.assign(this, input); }
}
PrimaryGeneratedColumn()(ExtendCustomerPrice.prototype, 'id');
Column({ type: 'varchar', length: 64 })(ExtendCustomerPrice.prototype, 'customerNumber');
Column({ type: 'varchar', length: 128 })(ExtendCustomerPrice.prototype, 'sku');
Column({ type: 'integer' })(ExtendCustomerPrice.prototype, 'price');
Column({ type: 'varchar', length: 3, nullable: true })(ExtendCustomerPrice.prototype, 'currencyCode');
Index(['customerNumber', 'sku'], { unique: true })(ExtendCustomerPrice);
Entity('extend_customer_price')(ExtendCustomerPrice);

// The customer number of the request's logged-in customer, looked up once per request.
const customerNumbers = new WeakMap();
async function customerNumberOf(connection, ctx) {
  if (!ctx.activeUserId) return undefined;
  if (customerNumbers.has(ctx)) return customerNumbers.get(ctx);
  const customer = await connection.getRepository(ctx, Customer).findOne({
    where: { user: { id: ctx.activeUserId } },
  });
  const number = (customer && customer.customFields && customer.customFields.extendCustomerNumber)
    || undefined;
  customerNumbers.set(ctx, number);
  return number;
}

class ExtendCustomerPriceStrategy {
  constructor() { this.fallback = new DefaultProductVariantPriceCalculationStrategy(); }
  init(injector) {
    this.connection = injector.get(TransactionalConnection);
    this.fallback.init(injector);
  }
  async calculate(args) {
    const { ctx, productVariant } = args;
    const number = productVariant.sku && await customerNumberOf(this.connection, ctx);
    if (!number) return this.fallback.calculate(args);
    const own = await this.connection.getRepository(ctx, ExtendCustomerPrice).findOne({
      where: { customerNumber: number, sku: productVariant.sku },
    });
    // the default strategy's tax handling, applied to the customer's price
    return this.fallback.calculate(own ? { ...args, inputPrice: own.price } : args);
  }
}

class ExtendPriceResolver {
  constructor(connection) { this.connection = connection; }

  async setExtendCustomerPrices(ctx, args) {
    const prices = args.prices || [];
    const deleted = args.deleted || [];
    if (prices.length + deleted.length > MAX_PRICES_PER_CALL) {
      throw new Error(`at most ${MAX_PRICES_PER_CALL} prices and deletions per call`);
    }
    const repo = this.connection.getRepository(ctx, ExtendCustomerPrice);
    const number = args.customerNumber;
    if (args.replaceAll) await repo.delete({ customerNumber: number });
    for (let i = 0; i < prices.length; i += 500) {
      const rows = prices.slice(i, i + 500).map((p) => ({
        customerNumber: number, sku: p.sku, price: p.price, currencyCode: p.currencyCode || null,
      }));
      await repo.upsert(rows, ['customerNumber', 'sku']);
    }
    for (let i = 0; i < deleted.length; i += 500) {
      await repo.delete({ customerNumber: number, sku: In(deleted.slice(i, i + 500)) });
    }
    return prices.length + deleted.length;
  }

  async extendCustomerPrices(ctx, args) {
    const rows = await this.connection.getRepository(ctx, ExtendCustomerPrice).find({
      where: { customerNumber: args.customerNumber },
      order: { sku: 'ASC' },
      skip: args.skip || 0,
      take: Math.min(args.take || 100, 1000),
    });
    return rows.map((r) => ({ sku: r.sku, price: r.price, currencyCode: r.currencyCode }));
  }
}
Inject(TransactionalConnection)(ExtendPriceResolver, undefined, 0);
for (const name of ['setExtendCustomerPrices', 'extendCustomerPrices']) {
  const descriptor = Object.getOwnPropertyDescriptor(ExtendPriceResolver.prototype, name);
  Ctx()(ExtendPriceResolver.prototype, name, 0);
  Args()(ExtendPriceResolver.prototype, name, 1);
  if (name.startsWith('set')) {
    Transaction()(ExtendPriceResolver.prototype, name, descriptor);
    Allow(Permission.UpdateCustomer)(ExtendPriceResolver.prototype, name, descriptor);
    Mutation()(ExtendPriceResolver.prototype, name, descriptor);
  } else {
    Allow(Permission.ReadCustomer)(ExtendPriceResolver.prototype, name, descriptor);
    Query()(ExtendPriceResolver.prototype, name, descriptor);
  }
}
Resolver()(ExtendPriceResolver);

const adminSchema = `
  input ExtendCustomerPriceInput { sku: String!  price: Int!  currencyCode: String }
  type ExtendCustomerPrice { sku: String!  price: Int!  currencyCode: String }
  extend type Mutation {
    "Upsert (and delete) one Extend customer's prices, in minor units. Returns the rows touched."
    setExtendCustomerPrices(customerNumber: String!, prices: [ExtendCustomerPriceInput!]!,
                            deleted: [String!], replaceAll: Boolean): Int!
  }
  extend type Query {
    extendCustomerPrices(customerNumber: String!, skip: Int, take: Int): [ExtendCustomerPrice!]!
  }
`;

// ---- order events -------------------------------------------------------------------------
function sign(secret, id, timestamp, body) {
  const key = Buffer.from(String(secret).replace(/^whsec_/, ''), 'base64');
  const mac = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
  return `v1,${mac}`;
}

async function post(options, payload) {
  const body = JSON.stringify(payload);
  const id = `vendure_${crypto.randomUUID()}`;
  // a few quick tries; a connector that stays down finds the order by polling instead
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const timestamp = String(Math.floor(Date.now() / 1000));
    try {
      const response = await fetch(options.eventsUrl, {
        method: 'POST',
        body,
        signal: AbortSignal.timeout(5000),
        headers: {
          'content-type': 'application/json',
          'webhook-id': id,
          'webhook-timestamp': timestamp,
          'webhook-signature': sign(options.webhookSecret, id, timestamp, body),
        },
      });
      if (response.ok || (response.status >= 400 && response.status < 500)) {
        if (!response.ok) Logger.warn(`connector refused ${payload.type}: ${response.status}`, LOG);
        return;
      }
    } catch (e) {
      if (attempt === 3) Logger.warn(`connector unreachable (${e}); it will find the order by polling`, LOG);
    }
    await new Promise((r) => setTimeout(r, 250 * attempt));
  }
}

class ExtendConnectorPlugin {
  static init(options) {
    ExtendConnectorPlugin.options = { ...options };
    return ExtendConnectorPlugin;
  }

  constructor(eventBus) { this.eventBus = eventBus; }

  onApplicationBootstrap() {
    const options = ExtendConnectorPlugin.options || {};
    if (!options.connectorUrl) {
      Logger.warn('no connectorUrl: order events are not sent (the connector still polls)', LOG);
      return;
    }
    if (!options.webhookSecret) throw new Error('ExtendConnectorPlugin: webhookSecret is required');
    const eventsUrl = `${options.connectorUrl.replace(/\/$/, '')}/webhooks/vendure`;
    this.eventBus.ofType(OrderStateTransitionEvent).subscribe((event) => {
      if (!TOLD_STATES.has(event.toState)) return;
      post({ ...options, eventsUrl }, {
        type: 'order.state_changed',
        timestamp: new Date().toISOString(),
        data: {
          orderId: String(event.order.id),
          orderCode: event.order.code,
          fromState: event.fromState,
          toState: event.toState,
        },
      });
    });
  }
}
Inject(EventBus)(ExtendConnectorPlugin, undefined, 0);
VendurePlugin({
  imports: [PluginCommonModule],
  entities: [ExtendCustomerPrice],
  adminApiExtensions: { schema: parse(adminSchema), resolvers: [ExtendPriceResolver] },
  configuration: (config) => {
    config.customFields.Customer = config.customFields.Customer || [];
    config.customFields.Customer.push({
      name: 'extendCustomerNumber', type: 'string', nullable: true, public: false,
      label: [{ languageCode: 'en', value: 'Extend customer number' }],
    });
    config.customFields.Order = config.customFields.Order || [];
    config.customFields.Order.push(
      { name: 'extendOrderNumber', type: 'string', nullable: true, public: true,
        label: [{ languageCode: 'en', value: 'Extend order number' }] },
      { name: 'extendStatus', type: 'string', nullable: true, public: true,
        label: [{ languageCode: 'en', value: 'Status in Extend' }] },
    );
    config.customFields.ProductVariant = config.customFields.ProductVariant || [];
    config.customFields.ProductVariant.push({
      name: 'extendPhaseOut', type: 'boolean', defaultValue: false, public: false,
      label: [{ languageCode: 'en', value: 'Phased out in Extend' }],
    });
    config.catalogOptions.productVariantPriceCalculationStrategy = new ExtendCustomerPriceStrategy();
    return config;
  },
  compatibility: '^3.0.0',
})(ExtendConnectorPlugin);

module.exports = { ExtendConnectorPlugin, ExtendCustomerPrice, ExtendCustomerPriceStrategy, sign };
