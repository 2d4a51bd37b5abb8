package owners

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
)

// FuzzCheckSignUp feeds the sign-up form's three fields: never a panic; what passes is a
// bare lower-case address, a printable name and a password within the rules.
func FuzzCheckSignUp(f *testing.F) {
	f.Add("ann@example.com", "Ann", "a fine password")
	f.Add("Ann <ann@example.com>", "<script>", "aaaaaaaaaaaa")
	f.Add("a@b.c\r\nBcc: x@y.z", "\x00", strings.Repeat("é", 70))
	f.Fuzz(func(t *testing.T, email, name, password string) {
		norm, err := checkSignUp(email, name, password)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("checkSignUp error %v is not ErrInvalid", err)
			}
			return
		}
		if norm != strings.ToLower(norm) || len(norm) > cloudstore.MaxEmailBytes || strings.ContainsAny(norm, "\r\n<> ") {
			t.Fatalf("accepted address %q", norm)
		}
		if !utf8.ValidString(password) || len(password) < MinPasswordBytes || len(password) > MaxPasswordBytes {
			t.Fatalf("accepted password of %d bytes", len(password))
		}
		if cloudstore.CheckText("name", name, cloudstore.MaxNameBytes, false) != nil {
			t.Fatalf("accepted name %q", name)
		}
	})
}
