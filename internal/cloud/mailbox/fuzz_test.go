package mailbox

import "testing"

// FuzzParse: no message a sender can submit panics the mailbox's parser.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Message-ID: <a@x>\r\nSubject: =?UTF-8?q?=C3=9Cber?=\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n91.5 =C2=B0C\r\n"))
	f.Add([]byte("Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n"))
	f.Add([]byte("no headers"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := parse(raw)
		if err == nil && len(m.Body) > 2*len(raw)+16 {
			t.Fatalf("body of %d bytes from %d raw bytes", len(m.Body), len(raw))
		}
	})
}
