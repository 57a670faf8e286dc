"""One module per data point (orders, balances, products, customers, prices) plus the outbox
that tells the shop. Flows run inside durable jobs and reach their collaborators through the
typed `flows.context.FlowContext` (`context.current()`); they never import the web layer or
the composition root (`service`)."""
