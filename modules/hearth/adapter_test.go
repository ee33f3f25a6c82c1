package hearth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// TestChooseAdapterAsCaddy: the commands that read a config pick the file
// and adapter exactly as Caddy's own loader does, for every kind of name.
func TestChooseAdapterAsCaddy(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct{ file, adapter string }{
		{"Caddyfile", ""}, {"typo.Caddyfile", ""}, {"site.caddyfile", ""}, {"Caddyfile.prod", ""},
		{"caddyfile.json", ""}, {"config.json", ""}, {"my.conf", ""}, {"CADDYFILE", ""},
		{"config.json", "caddyfile"}, {"my.conf", "caddyfile"}, {"", ""},
	} {
		if tc.file != "" {
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte("{\n}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, wantFile, wantAdapter, wantErr := caddycmd.LoadConfig(tc.file, tc.adapter)
		file, adapter, err := chooseAdapter(tc.file, tc.adapter)
		if (err != nil) != (wantErr != nil) || err == nil && (file != wantFile || adapter != wantAdapter) {
			t.Errorf("%q --adapter %q: chose %q, %q (%v); Caddy chose %q, %q (%v)", tc.file, tc.adapter, file, adapter, err, wantFile, wantAdapter, wantErr)
		}
		if _, err := adaptConfig(tc.file, tc.adapter); err != nil {
			t.Errorf("%q --adapter %q: %v", tc.file, tc.adapter, err)
		}
	}
	// no Caddyfile here and no --config: a clear error, as Caddy has no config
	if err := os.Remove(filepath.Join(dir, "Caddyfile")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := chooseAdapter("", ""); err == nil {
		t.Errorf("no config accepted")
	}
}

// TestReportIsPrintable: text from an app (a traceback, a host name) never
// puts a control character, such as an escape sequence, on the terminal.
func TestReportIsPrintable(t *testing.T) {
	var b strings.Builder
	err := writeCheckReport(&b, []CheckedApp{{Name: "a\x1b]0;x\x07", Error: "Traceback\n\x1b[2J boom\r\x9b31m",
		Findings: []CheckFinding{{ID: "HG-X\x1b", Severity: "warning", Problem: "host \x1b[31mevil", Fix: "fix\x00it"}}}}, []string{"backup b: its copies would go to /srv/\x1b[2J"}, []string{"took it as /\x1b[2J"}, checkFailed)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range b.String() {
		if r != '\n' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0) {
			t.Fatalf("control character %q in the report:\n%q", r, b.String())
		}
	}
}
