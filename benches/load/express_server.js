// The classic Express webhook handler, as Stripe's docs write it: express.raw(), then
// stripe.webhooks.constructEvent, a switch on the type, and a Set of processed ids.
'use strict';
const express = require('express');
const Stripe = require('stripe');

const stripe = new Stripe('sk_test_unused');
const secret = process.env.STRIPE_WEBHOOK_SECRET;
const processed = new Set();
const app = express();

app.post('/webhook', express.raw({ type: 'application/json' }), (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], secret);
  } catch (err) {
    return res.status(400).send(`Webhook Error: ${err.message}`);
  }
  if (processed.has(event.id)) return res.json({ received: true, duplicate: true });
  switch (event.type) {
    case 'checkout.session.completed': {
      const session = event.data.object;
      void session.customer;
      break;
    }
    default:
      break;
  }
  processed.add(event.id);
  res.json({ received: true });
});

app.listen(parseInt(process.env.PORT || '4243', 10), '127.0.0.1');
