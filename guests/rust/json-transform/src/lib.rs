//! Transforms a JSON order into a summary with serde: the "real work"
//! example guest.
#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Order {
    customer: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    cents: u64,
    quantity: u32,
}

#[derive(Serialize)]
struct Summary {
    customer: String,
    lines: usize,
    total_cents: u64,
    most_expensive: Option<String>,
}

/// Sum an order; an empty order is an error the host sees as `GuestError`.
fn summarise(order: Order) -> Result<Summary, &'static str> {
    if order.items.is_empty() {
        return Err("an order needs at least one item");
    }
    let total_cents = order
        .items
        .iter()
        .map(|i| i.cents * u64::from(i.quantity))
        .sum();
    let most_expensive = order
        .items
        .iter()
        .max_by_key(|i| i.cents)
        .map(|i| i.name.clone());
    Ok(Summary {
        customer: order.customer,
        lines: order.items.len(),
        total_cents,
        most_expensive,
    })
}

/// Upper-cases any bytes: the smallest bytes function.
fn shout(input: &[u8]) -> Result<Vec<u8>, &'static str> {
    Ok(input.to_ascii_uppercase())
}

cleanslate_guest::export_json!(summarise);
cleanslate_guest::export_bytes!(shout);
