package kmemleakreceiver

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"
)

// The documentation's own tests: docs/architecture.md names every package
// of the module and nothing that is not there, each package imports only
// what its row allows, every relative link of the user documentation
// leads somewhere, and the README's options table is the configuration.
// They read files only: no BPF, no privileges.

const (
	modulePath       = "github.com/kmemleak/kmemleakreceiver"
	architectureDoc  = "docs/architecture.md"
	packagesHeading  = "## Packages"
	readmeOptionsAt  = "## Configuration"
	noModuleImports  = "—"
	rootPackageInDoc = "."
)

// goPackageDirs lists the directories of this module that hold Go files,
// relative to the root ("." for the root itself), as the go command sees
// them: directories named testdata or starting with "." or "_" are not
// packages, and a directory with a go.mod of its own is another module
// (examples/kubernetes/validate).
func goPackageDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != "." {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			dir := filepath.ToSlash(filepath.Dir(path))
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	require.NoError(t, err)
	slices.Sort(dirs)
	return dirs
}

// packageRow is a row of the architecture document's table of packages.
type packageRow struct {
	dir     string   // relative to the root, "." for the root
	imports []string // the module's packages it may import, as dirs
	line    int
}

var backticked = regexp.MustCompile("`([^`]+)`")

// packageRows reads the table under "## Packages": rows whose first cell
// begins with a backticked path; the last cell lists, backticked, the
// module's packages the row's package may import, or begins with "—" for
// none (what follows it is a comment).
func packageRows(t *testing.T, doc string) []packageRow {
	t.Helper()
	var rows []packageRow
	in := false
	for i, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = line == packagesHeading
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		require.Len(t, cells, 3, "%s:%d: a package row has three cells: package, job, may import", architectureDoc, i+1)
		first := backticked.FindStringSubmatch(cells[0])
		row := packageRow{dir: strings.TrimSuffix(first[1], "/"), line: i + 1}
		if !strings.HasPrefix(strings.TrimSpace(cells[2]), noModuleImports) {
			for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
				row.imports = append(row.imports, strings.TrimSuffix(m[1], "/"))
			}
			require.NotEmpty(t, row.imports, "%s:%d: list what %s may import, or write %s", architectureDoc, i+1, row.dir, noModuleImports)
		}
		rows = append(rows, row)
	}
	require.NotEmpty(t, rows, "%s has no table of packages under %q", architectureDoc, packagesHeading)
	return rows
}

func readArchitecture(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(architectureDoc)
	require.NoError(t, err)
	return string(doc)
}

// Every package of the module has a row in the architecture document, and
// every row is a package of the module.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	rows := packageRows(t, readArchitecture(t))
	var named []string
	for _, r := range rows {
		if slices.Contains(named, r.dir) {
			t.Errorf("%s:%d: %s has two rows", architectureDoc, r.line, r.dir)
		}
		named = append(named, r.dir)
	}
	dirs := goPackageDirs(t)
	for _, dir := range dirs {
		if !slices.Contains(named, dir) {
			t.Errorf("%s has Go files but no row in %s %q", dir, architectureDoc, packagesHeading)
		}
	}
	for _, r := range rows {
		if !slices.Contains(dirs, r.dir) {
			t.Errorf("%s:%d: %s is no directory of this module with Go files", architectureDoc, r.line, r.dir)
		}
	}
}

// Every path the architecture document names in backquotes, under one of
// the repository's top-level directories, exists.
func TestArchitecturePathsExist(t *testing.T) {
	doc := readArchitecture(t)
	top, err := os.ReadDir(".")
	require.NoError(t, err)
	var roots []string
	for _, e := range top {
		if e.IsDir() {
			roots = append(roots, e.Name())
		}
	}
	checked := 0
	for i, line := range strings.Split(doc, "\n") {
		for _, m := range backticked.FindAllStringSubmatch(line, -1) {
			path := strings.TrimSuffix(m[1], "/")
			first, _, _ := strings.Cut(path, "/")
			if strings.ContainsAny(path, " *{}") || !slices.Contains(roots, first) {
				continue
			}
			checked++
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s:%d names %s, which does not exist", architectureDoc, i+1, path)
			}
		}
	}
	assert.Positive(t, checked)
}

// moduleImports lists the module's packages that the non-test Go files of
// dir import, whatever their build constraints, as dirs.
func moduleImports(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, spec := range parsed.Imports {
			path, err := strconv.Unquote(spec.Path.Value)
			require.NoError(t, err)
			var imported string
			switch {
			case path == modulePath:
				imported = rootPackageInDoc
			case strings.HasPrefix(path, modulePath+"/"):
				imported = strings.TrimPrefix(path, modulePath+"/")
			default:
				continue
			}
			if !slices.Contains(out, imported) {
				out = append(out, imported)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Each package imports only the packages of this module its row allows:
// the layering the document describes is the code's.
func TestArchitectureImports(t *testing.T) {
	for _, r := range packageRows(t, readArchitecture(t)) {
		if _, err := os.Stat(r.dir); err != nil {
			continue // TestArchitectureNamesEveryPackage says so
		}
		for _, imported := range moduleImports(t, r.dir) {
			if !slices.Contains(r.imports, imported) {
				t.Errorf("%s imports %s, which its row in %s (line %d) does not allow", r.dir, imported, architectureDoc, r.line)
			}
		}
	}
}

// userDocs are the markdown files whose links TestDocLinksResolve checks.
func userDocs(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	return append([]string{"README.md", "BENCHMARKS.md", "bpf/README.md"}, docs...)
}

var (
	markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	fence        = regexp.MustCompile("^\\s*```")
)

// anchors are the ids GitHub gives a markdown file's headings: lower case,
// spaces to hyphens, punctuation other than hyphens and underscores
// dropped, "-1", "-2" after repeats.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for line := range strings.Lines(text) {
		if fence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f && r != '–' && r != '—':
				b.WriteRune(r)
			}
		}
		id := b.String()
		for n := 1; out[id]; n++ {
			id = b.String() + "-" + strconv.Itoa(n)
		}
		out[id] = true
	}
	return out
}

// Every relative link of README.md, BENCHMARKS.md, bpf/README.md and
// docs/*.md leads to a file or directory of the repository, and an anchor
// to a heading of its markdown file.
func TestDocLinksResolve(t *testing.T) {
	checked := 0
	for _, doc := range userDocs(t) {
		data, err := os.ReadFile(doc)
		require.NoError(t, err)
		inFence := false
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if fence.MatchString(line) {
				inFence = !inFence
			}
			if inFence {
				continue
			}
			for _, m := range markdownLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, anchor, _ := strings.Cut(target, "#")
				file := doc
				if path != "" {
					file = filepath.Join(filepath.Dir(doc), path)
				}
				if _, err := os.Stat(file); err != nil {
					t.Errorf("%s:%d: %s: no such file %s", doc, n, target, file)
					continue
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(file, ".md") {
					t.Errorf("%s:%d: %s: an anchor into a file that is not markdown", doc, n, target)
					continue
				}
				text, err := os.ReadFile(file)
				require.NoError(t, err)
				if !anchors(string(text))[anchor] {
					t.Errorf("%s:%d: %s: %s has no heading #%s", doc, n, target, file, anchor)
				}
			}
		}
		require.NoError(t, sc.Err())
	}
	assert.Positive(t, checked)
}

// readmeOptions is the README's options table: the YAML block of its
// Configuration section, the receiver's settings.
func readmeOptions(t *testing.T) map[string]any {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n"+readmeOptionsAt+"\n")
	require.True(t, ok, "the README has no %q section", readmeOptionsAt)
	var block string
	for rest := section; ; {
		var found bool
		_, rest, found = strings.Cut(rest, "```yaml\n")
		require.True(t, found, "the README's Configuration has no YAML block with every option")
		block, rest, _ = strings.Cut(rest, "```")
		if strings.Contains(block, "max_tracked_objects:") {
			break
		}
	}
	var doc struct {
		Receivers map[string]map[string]any `yaml:"receivers"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(block), &doc))
	options, ok := doc.Receivers["kmemleak"]
	require.True(t, ok, "the options block configures receivers::kmemleak")
	return options
}

// optionKeys lists the mapstructure keys of a config struct, nested ones
// as parent::child; squashed structs (mdatagen's metrics) are left out,
// as are the generated toggles' contents.
func optionKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, prefix+tag)
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
			keys = append(keys, optionKeys(f.Type, prefix+tag+"::")...)
		}
	}
	return keys
}

func flatKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k, v := range m {
		keys = append(keys, prefix+k)
		if sub, ok := v.(map[string]any); ok && k != "metrics" && k != "events" && k != "resource_attributes" {
			keys = append(keys, flatKeys(sub, prefix+k+"::")...)
		}
	}
	return keys
}

// The README's options table names every option of Config and no other,
// and each value it gives is the default.
func TestReadmeOptionsAreTheDefaults(t *testing.T) {
	options := readmeOptions(t)
	want := append(optionKeys(reflect.TypeFor[Config](), ""), "metrics", "resource_attributes")
	assert.ElementsMatch(t, want, flatKeys(options, ""), "the README's options table and Config's fields")

	// The generated toggles record that the user set them: compare the
	// rest.
	for _, generated := range []string{"metrics", "events", "resource_attributes"} {
		delete(options, generated)
	}
	cfg := createDefaultConfig()
	require.NoError(t, confmap.NewFromStringMap(options).Unmarshal(cfg))
	def := createDefaultConfig()
	// An empty list in YAML is an empty slice; the default is nil.
	for _, l := range []*[]string{&cfg.Caches.Include, &cfg.Caches.Exclude} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	assert.Equal(t, def, cfg, "the README's options table gives other values than the defaults")
}
