import type { CodegenConfig } from "@graphql-codegen/cli";

// Typed operations from the schema the gateway serves (gateway/schema.graphql, which a
// Rust test keeps equal to the served SDL). The output is committed so a build needs
// no codegen; `npm run codegen:check` (run by scripts/test) fails when it is stale.
const config: CodegenConfig = {
  schema: "../gateway/schema.graphql",
  documents: ["src/api/operations.graphql"],
  generates: {
    "src/api/generated.ts": {
      plugins: ["typescript-operations", "typed-document-node"],
      config: {
        documentMode: "string",
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
        scalars: { Date: "string", DateTime: "string", ID: "string" },
      },
    },
  },
};
export default config;
