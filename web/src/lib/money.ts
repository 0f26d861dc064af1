/** Money as the API sends it: integer minor units (cents) of an ISO 4217 currency. */
export interface Money {
  amount: number;
  currency: string;
}

const formats = new Map<string, Intl.NumberFormat>();

/** "€8.50": one formatter per currency, reused (10,000 seat labels use it). */
export function formatMoney(money: Money, locale = "en-IE"): string {
  const key = `${locale}/${money.currency}`;
  let format = formats.get(key);
  if (!format) {
    format = new Intl.NumberFormat(locale, { style: "currency", currency: money.currency });
    formats.set(key, format);
  }
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(money.amount / 10 ** digits);
}

/** The sum of prices in one currency; null for none. Mixed currencies are a bug upstream. */
export function sumMoney(prices: readonly Money[]): Money | null {
  if (prices.length === 0) return null;
  const currency = prices[0].currency;
  let amount = 0;
  for (const price of prices) {
    if (price.currency !== currency) throw new Error(`mixed currencies: ${currency} and ${price.currency}`);
    amount += price.amount;
  }
  return { amount, currency };
}
