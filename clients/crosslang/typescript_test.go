package crosslang_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// snapshot reads every file under dir: its content and modification time,
// by path relative to dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = info.ModTime().Format(time.RFC3339Nano) + " " + string(data)
		return nil
	}))
	return files
}

// TestProcessDirectoryExamplesShareTheWork runs the Python example over a
// directory, then the TypeScript one over the same directory and output
// (and the other way round over a second one): they use the same flags,
// namespace, keys and fingerprints, so the second processes nothing — every
// key is replayed — and leaves the output files as the first wrote them.
func TestProcessDirectoryExamplesShareTheWork(t *testing.T) {
	t.Parallel()
	requireRuntime(t, python, "Python")
	requireTypeScriptBuilt(t)
	addr, _ := startLedgerd(t)
	clients := clientsDir()
	pythonExample := []string{filepath.Join(clients, "python", "examples", "process_directory.py")}
	typescriptExample := []string{filepath.Join(clients, "typescript", "dist", "examples", "process-directory.js")}
	env := []string{"PYTHONDONTWRITEBYTECODE=1"}

	for _, order := range []struct {
		name          string
		first, second []string
		firstRuntime  string
		secondRuntime string
	}{
		{"python then typescript", pythonExample, typescriptExample, python, "node"},
		{"typescript then python", typescriptExample, pythonExample, "node", python},
	} {
		root := t.TempDir()
		input, output := filepath.Join(root, "in"), filepath.Join(root, "out")
		require.NoError(t, os.MkdirAll(filepath.Join(input, "sub"), 0o755))
		// Each order gets keys of its own: the examples share the namespace.
		prefix := strings.ReplaceAll(order.name, " ", "-")
		records := map[string]string{
			prefix + "-a.txt":       "one\n two \n\nthree\n",
			"sub/" + prefix + "-b":  "x\r\ny\n",
			prefix + "-empty.txt":   "",
			prefix + "-unicode.txt": "héllo wörld\n",
		}
		for name, content := range records {
			require.NoError(t, os.WriteFile(filepath.Join(input, name), []byte(content), 0o644))
		}
		flags := []string{"--addr", addr, "--input", input, "--output", output, "--namespace", "process-directory"}

		out := run(t, 2*time.Minute, root, env, order.firstRuntime, append(order.first, flags...)...)
		require.Contains(t, out, "4 processed, 0 already done, 0 failed", "%s: the first run", order.name)
		written := snapshot(t, output)

		out = run(t, 2*time.Minute, root, env, order.secondRuntime, append(order.second, flags...)...)
		require.Contains(t, out, "0 processed, 4 already done, 0 failed", "%s: the second run did work again:\n%s", order.name, out)
		require.Len(t, regexp.MustCompile(`(?m): already processed \(token 1\), \d+ records$`).FindAllString(out, -1), 4, out)
		require.Equal(t, written, snapshot(t, output), "%s: the second run changed the output files", order.name)
	}
}

// TestTypeScriptPackage packs the TypeScript client as npm would publish
// it, installs the tarball into a fresh project that compiles with strict
// settings (NodeNext, and the declarations of the package and of its
// dependencies checked: Connect's name DOM types such as HeadersInit), and runs
// an example against a live ledgerd: what a team that installs the
// published package gets.
func TestTypeScriptPackage(t *testing.T) {
	t.Parallel()
	requireTypeScriptBuilt(t)
	addr, _ := startLedgerd(t)
	pkgDir := filepath.Join(clientsDir(), "typescript")
	project := t.TempDir()

	// --ignore-scripts: prepack would clean dist/, which the other tests of
	// this package run from; requireTypeScriptBuilt has just built it.
	packed := run(t, 2*time.Minute, pkgDir, nil, "npm", "pack", "--ignore-scripts", "--json", "--pack-destination", project)
	var packs []struct {
		Filename string `json:"filename"`
		Version  string `json:"version"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	start := strings.Index(packed, "[") // npm may log a line or two before the JSON
	require.GreaterOrEqual(t, start, 0, packed)
	require.NoError(t, json.Unmarshal([]byte(packed[start:]), &packs), packed)
	require.Len(t, packs, 1)
	var paths []string
	for _, f := range packs[0].Files {
		paths = append(paths, f.Path)
	}
	require.Contains(t, paths, "dist/src/index.js")
	require.Contains(t, paths, "dist/src/index.d.ts")
	for _, p := range paths {
		require.False(t, strings.HasPrefix(p, "dist/test/") || strings.HasPrefix(p, "node_modules/"), "the package carries %s", p)
	}
	version, err := os.ReadFile(filepath.Join(clientsDir(), "..", "VERSION"))
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(version)), packs[0].Version)

	write := func(name, content string) {
		require.NoError(t, os.WriteFile(filepath.Join(project, name), []byte(content), 0o644))
	}
	write("package.json", `{"name": "consumer", "private": true, "type": "module"}`+"\n")
	write("tsconfig.json", `{
  "compilerOptions": {
    "target": "ES2022", "lib": ["ES2022", "DOM"], "types": ["node"],
    "module": "NodeNext", "moduleResolution": "NodeNext",
    "strict": true, "noUncheckedIndexedAccess": true, "exactOptionalPropertyTypes": true,
    "skipLibCheck": false, "outDir": "dist"
  },
  "include": ["main.ts"]
}
`)
	write("main.ts", `import { createClient, VERSION, type DoResult } from "@ledgerd/client";

const addr = process.argv[2];
if (!addr) throw new Error("usage: main.js ADDR");
const client = createClient({ address: addr, insecure: true, breaker: { failureThreshold: 3 } });
const first: DoResult = await client.do("consumer", "k1", async (lease) => "done with token " + lease.fencingToken, { timeoutMs: 60_000 });
const again = await client.do("consumer", "k1", async () => "not this", { timeoutMs: 60_000 });
const batch = await client.doBatch("consumer", ["k1", "k2"], async (keys) => keys.map((k) => "batch " + k), { timeoutMs: 60_000 });
console.log(JSON.stringify({
  version: VERSION,
  first: first.outcome,
  again: again.outcome,
  value: new TextDecoder().decode(again.value),
  batch: batch.map((r) => r.result?.outcome ?? String(r.error)),
}));
await client.close();
`)
	// The package's dependencies come from npm's cache when npm ci filled
	// it (scripts/deps.sh node), else from the registry; @types/node is the
	// version the client is developed with.
	run(t, 5*time.Minute, project, nil, "npm", "install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error",
		filepath.Join(project, packs[0].Filename), "@types/node@20.19.43")
	run(t, 2*time.Minute, project, nil, filepath.Join(pkgDir, "node_modules", ".bin", "tsc"), "-p", ".")
	out := run(t, 2*time.Minute, project, nil, "node", "dist/main.js", addr)
	require.JSONEq(t, `{"version": "`+packs[0].Version+`", "first": "ran", "again": "replayed", "value": "done with token 1", "batch": ["replayed", "ran"]}`,
		strings.TrimSpace(out))
}
