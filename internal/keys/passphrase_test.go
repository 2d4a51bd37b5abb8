package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPassphrase_Sources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(content string) string {
		f, err := os.CreateTemp(dir, "pass")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(content); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvPassphrase {
				return v
			}
			return ""
		}
	}
	long := strings.Repeat("x", maxPassphraseBytes)
	tests := []struct {
		name    string
		getenv  func(string) string
		stdin   string
		file    string
		want    string
		none    bool
		wantErr bool
	}{
		{name: "file_first_line", file: file("secret\nsecond line\n"), want: "secret"},
		{name: "file_crlf", file: file("secret\r\n"), want: "secret"},
		{name: "file_no_newline", file: file("secret"), want: "secret"},
		{name: "file_spaces_kept", file: file(" a b \n"), want: " a b "},
		{name: "file_beats_env", getenv: env("from env"), file: file("from file\n"), want: "from file"},
		{name: "file_longest", file: file(long + "\n"), want: long},
		{name: "stdin", stdin: "typed\nrest", file: "-", want: "typed"},
		{name: "env", getenv: env("from env"), want: "from env"},
		{name: "none", getenv: env(""), none: true},
		{name: "none_nil_getenv", none: true},
		{name: "file_empty_line", file: file("\nsecret\n"), wantErr: true},
		{name: "file_empty", file: file(""), wantErr: true},
		{name: "file_too_long", file: file(long + "x\n"), wantErr: true},
		{name: "file_too_long_no_newline", file: file(long + "xx"), wantErr: true},
		{name: "file_missing", file: filepath.Join(dir, "missing"), wantErr: true},
		{name: "stdin_empty", file: "-", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Passphrase(tt.getenv, strings.NewReader(tt.stdin), tt.file)
			switch {
			case tt.wantErr:
				if err == nil {
					t.Errorf("Passphrase = %q, want an error", got)
				}
			case err != nil:
				t.Errorf("Passphrase = %v", err)
			case tt.none && got != nil:
				t.Errorf("Passphrase = %q, want none (nil)", got)
			case !tt.none && string(got) != tt.want:
				t.Errorf("Passphrase = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Passphrase(nil, nil, "-"); err == nil {
		t.Error("Passphrase(file -, no stdin) = nil error, want one")
	}
}
