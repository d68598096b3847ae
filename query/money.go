package query

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// minorUnits is the ISO 4217 exponent of the currencies whose minor unit is
// not the cent; every other three-letter code has 2 unless the rate card
// says otherwise (RateCard minor_units).
var minorUnits = map[string]int{
	// 0 decimals
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	// 3 decimals
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	// 4 decimals
	"CLF": 4, "UYW": 4,
}

// currencyMinorUnits returns the number of decimals of code's minor unit.
func currencyMinorUnits(code string) int {
	if n, ok := minorUnits[code]; ok {
		return n
	}
	return 2
}

// parseDecimal reads a plain decimal number: an optional '-', digits, and
// optionally '.' and more digits. No exponent, no fraction syntax, no float
// ever: the value is exact.
func parseDecimal(s string) (*big.Rat, error) {
	t := strings.TrimSpace(s)
	neg := strings.HasPrefix(t, "-")
	if neg {
		t = t[1:]
	}
	intPart, frac, hasDot := strings.Cut(t, ".")
	if intPart == "" || (hasDot && frac == "") {
		return nil, fmt.Errorf("%q is not a decimal number (want digits, optionally . and digits)", s)
	}
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return nil, fmt.Errorf("%q is not a decimal number (want digits, optionally . and digits)", s)
			}
		}
	}
	num, ok := new(big.Int).SetString(intPart+frac, 10)
	if !ok {
		return nil, errors.New("decimal number too long")
	}
	if neg {
		num.Neg(num)
	}
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	return new(big.Rat).SetFrac(num, den), nil
}

// roundHalfEven returns x x 10^places rounded to the nearest integer, ties
// to the even one: the amount in units of 10^-places.
func roundHalfEven(x *big.Rat, places int) *big.Int {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil)
	num := new(big.Int).Mul(x.Num(), scale)
	den := x.Denom() // positive
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	// QuoRem truncates toward zero; r has num's sign.
	if r.Sign() == 0 {
		return q
	}
	twice := new(big.Int).Abs(r)
	twice.Lsh(twice, 1)
	switch c := twice.Cmp(den); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

// formatUnits formats n units of 10^-places as a decimal string with exactly
// places decimals: formatUnits(1234, 2) = "12.34", formatUnits(-5, 2) = "-0.05".
func formatUnits(n *big.Int, places int) string {
	s := new(big.Int).Abs(n).String()
	if places > 0 {
		if len(s) <= places {
			s = strings.Repeat("0", places-len(s)+1) + s
		}
		s = s[:len(s)-places] + "." + s[len(s)-places:]
	}
	if n.Sign() < 0 {
		s = "-" + s
	}
	return s
}

// formatRat rounds x half to even to places decimals and formats it.
func formatRat(x *big.Rat, places int) string {
	return formatUnits(roundHalfEven(x, places), places)
}

// formatExact formats x exactly when its decimal expansion ends within
// maxPlaces digits (trailing zeros dropped), and reports whether it did.
func formatExact(x *big.Rat, maxPlaces int) (string, bool) {
	if x.IsInt() {
		return x.Num().String(), true
	}
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(maxPlaces)), nil)
	num := new(big.Int).Mul(x.Num(), scale)
	if new(big.Int).Rem(num, x.Denom()).Sign() != 0 {
		return "", false
	}
	s := formatUnits(num.Quo(num, x.Denom()), maxPlaces)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, "."), true
}
