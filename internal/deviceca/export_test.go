package deviceca

import "math/big"

// TBSBoth returns the to-be-signed certificate the Issuer's template encodes for req (nil
// without a template) and the one x509 encodes, for the same serial.
func (i *Issuer) TBSBoth(req IssueRequest, sn *big.Int) (fromTemplate, fromX509 []byte, err error) {
	fromX509, err = i.x509TBS(req, sn)
	return i.tmpl.encode(req, sn), fromX509, err
}
