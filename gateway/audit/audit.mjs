// Runs graphql-http's server audits (the GraphQL-over-HTTP spec conformance suite)
// against a running gateway. Usage: node audit.mjs http://127.0.0.1:PORT/graphql
// Prints one JSON line per audit; exits 1 when any MUST audit fails.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}

let failedMust = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  const line = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    line.reason = result.reason;
    line.httpStatus = result.response?.status;
    try {
      line.body = (await result.response.text()).slice(0, 500);
    } catch {
      // A body already read by the audit itself.
    }
    if (result.name.startsWith('MUST')) failedMust += 1;
  }
  console.log(JSON.stringify(line));
}
console.log(JSON.stringify({ summary: true, failedMust }));
process.exit(failedMust > 0 ? 1 : 0);
