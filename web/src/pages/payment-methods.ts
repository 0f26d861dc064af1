/** The payment service's test cards (README "Test payment methods"), as the page documents them. */
export const PAYMENT_METHODS = [
  { id: "pm_card_ok", label: "Test card: pays", effect: "the payment succeeds and the booking is confirmed" },
  { id: "pm_card_declined", label: "Test card: declined", effect: "the bank declines; nothing is charged and the seats are released" },
  { id: "pm_card_insufficient_funds", label: "Test card: insufficient funds", effect: "declined for lack of funds; the seats are released" },
  { id: "pm_card_error", label: "Test card: processor error", effect: "the processor fails after retries; nothing is charged and the seats stay held, so you can try again" },
  { id: "pm_card_slow", label: "Test card: slow", effect: "the payment succeeds after a few seconds (shows “payment processing…”)" },
] as const;
