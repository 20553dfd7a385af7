//! The bus against a real RabbitMQ, each test in its own virtual host, and
//! the `Bus` conformance suite run against RabbitMQ and `MemoryBus`.

mod amqp;
mod conformance;
