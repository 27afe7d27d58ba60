//! The `--augment` grammar: parsing, validation and the canonical text (`Display`).

use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("--augment `{item}`: {message}")]
pub struct AugmentError {
    pub item: String,
    pub message: String,
}

/// The parsed `--augment` text; the default is no augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    pub flip: f32,
    pub vflip: f32,
    pub shift: u32,
    /// (p, scale lo, scale hi, ratio lo, ratio hi)
    pub resized_crop: Option<[f32; 5]>,
    /// (p, degrees, translate fraction, scale lo, scale hi, shear degrees)
    pub affine: Option<[f32; 6]>,
    /// (p, distortion)
    pub perspective: Option<[f32; 2]>,
    pub brightness: f32,
    pub contrast: f32,
    /// (p, kernel size, sigma lo, sigma hi)
    pub blur: Option<[f32; 4]>,
    pub noise: f32,
    /// (p, scale lo, scale hi, ratio lo, ratio hi, value)
    pub erase: Option<[f32; 6]>,
}

fn range(v: &str) -> Option<(f32, f32)> {
    match v.split_once(':') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => v.trim().parse().ok().map(|x: f32| (x, x)),
    }
}

impl Augment {
    pub fn is_on(&self) -> bool {
        *self != Augment::default()
    }

    pub(super) fn photometric(&self) -> bool {
        self.brightness > 0.0
            || self.contrast > 0.0
            || self.blur.is_some()
            || self.noise > 0.0
            || self.erase.is_some()
    }

    pub fn parse(text: &str) -> std::result::Result<Augment, AugmentError> {
        let mut a = Augment::default();
        let t = text.trim();
        if t.is_empty() || t == "none" {
            return Ok(a);
        }
        // Items are separated by spaces outside parentheses.
        let mut items = Vec::new();
        let (mut depth, mut cur) = (0i32, String::new());
        for c in t.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                c if c.is_whitespace() && depth == 0 => {
                    if !cur.is_empty() {
                        items.push(std::mem::take(&mut cur));
                    }
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            items.push(cur);
        }
        for item in items {
            a.add(&item)?;
        }
        Ok(a)
    }

    fn add(&mut self, item: &str) -> std::result::Result<(), AugmentError> {
        let err = |message: String| AugmentError {
            item: item.to_string(),
            message,
        };
        let (name, args) = match item.find('(') {
            Some(i) => (
                &item[..i],
                item[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| err("missing the closing `)`".into()))?,
            ),
            None => (item, ""),
        };
        // Positional arguments take the item's first key.
        let keys: &[&str] = match name {
            "flip" | "vflip" => &["p"],
            "shift" => &["n"],
            "resized_crop" => &["scale", "ratio", "p"],
            "affine" => &["rotate", "translate", "scale", "shear", "p"],
            "perspective" => &["d", "p"],
            "brightness" | "contrast" | "noise" => &["amount"],
            "blur" => &["k", "sigma", "p"],
            "erase" => &["p", "scale", "ratio", "value"],
            other => {
                return Err(err(format!(
                    "unknown augmentation `{other}` (flip, vflip, shift, resized_crop, affine, perspective, brightness, contrast, blur, noise, erase)"
                )))
            }
        };
        let mut given: Vec<(&str, &str)> = Vec::new();
        for (i, arg) in args
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let (k, v) = match arg.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None if i == 0 => (keys[0], arg),
                None => return Err(err(format!("`{arg}` should be key=value"))),
            };
            if !keys.contains(&k) {
                return Err(err(format!(
                    "`{name}` has no setting `{k}` (it takes: {})",
                    keys.join(", ")
                )));
            }
            given.push((k, v));
        }
        let get = |k: &str| given.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let num =
            |k: &str, default: f32, lo: f32, hi: f32| -> std::result::Result<f32, AugmentError> {
                let Some(v) = get(k) else { return Ok(default) };
                let x: f32 = v
                    .parse()
                    .map_err(|_| err(format!("{k} = `{v}` is not a number")))?;
                if !(lo..=hi).contains(&x) {
                    return Err(err(format!("{k} = {x} must be in [{lo}, {hi}]")));
                }
                Ok(x)
            };
        let span = |k: &str,
                    default: (f32, f32),
                    lo: f32,
                    hi: f32|
         -> std::result::Result<(f32, f32), AugmentError> {
            let Some(v) = get(k) else { return Ok(default) };
            let (a, b) =
                range(v).ok_or_else(|| err(format!("{k} = `{v}` should be a number or LO:HI")))?;
            if !(lo <= a && a <= b && b <= hi) {
                return Err(err(format!(
                    "{k} = {a}:{b} must satisfy {lo} <= LO <= HI <= {hi}"
                )));
            }
            Ok((a, b))
        };
        match name {
            "flip" => self.flip = num("p", 0.5, 0.0, 1.0)?,
            "vflip" => self.vflip = num("p", 0.5, 0.0, 1.0)?,
            "shift" => {
                let n = num("n", f32::NAN, 0.0, 14.0)?;
                if n.is_nan() || n.fract() != 0.0 {
                    return Err(err("needs a whole number of pixels, e.g. shift(2)".into()));
                }
                self.shift = n as u32;
            }
            "resized_crop" => {
                let (s0, s1) = span("scale", (0.08, 1.0), 0.0001, 1.0)?;
                let (r0, r1) = span("ratio", (0.75, 4.0 / 3.0), 0.01, 100.0)?;
                self.resized_crop = Some([num("p", 1.0, 0.0, 1.0)?, s0, s1, r0, r1]);
            }
            "affine" => {
                let (s0, s1) = span("scale", (1.0, 1.0), 0.1, 10.0)?;
                self.affine = Some([
                    num("p", 1.0, 0.0, 1.0)?,
                    num("rotate", 0.0, 0.0, 180.0)?,
                    num("translate", 0.0, 0.0, 1.0)?,
                    s0,
                    s1,
                    num("shear", 0.0, 0.0, 80.0)?,
                ]);
            }
            "perspective" => {
                self.perspective = Some([num("p", 0.5, 0.0, 1.0)?, num("d", 0.5, 0.0, 1.0)?])
            }
            "brightness" => {
                self.brightness =
                    num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "contrast" => {
                self.contrast =
                    num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "noise" => {
                self.noise = num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "blur" => {
                let k = num("k", 3.0, 1.0, 15.0)?;
                if k.fract() != 0.0 || (k as u32).is_multiple_of(2) {
                    return Err(err(format!("k = {k} must be an odd kernel size (1 to 15)")));
                }
                let (s0, s1) = span("sigma", (0.1, 2.0), 0.01, 20.0)?;
                self.blur = Some([num("p", 1.0, 0.0, 1.0)?, k, s0, s1]);
            }
            _ => {
                let (s0, s1) = span("scale", (0.02, 0.33), 0.0001, 1.0)?;
                let (r0, r1) = span("ratio", (0.3, 3.3), 0.01, 100.0)?;
                self.erase = Some([
                    num("p", 0.5, 0.0, 1.0)?,
                    s0,
                    s1,
                    r0,
                    r1,
                    num("value", 0.0, 0.0, 1.0)?,
                ]);
            }
        }
        Ok(())
    }
}

fn required(
    v: f32,
    err: &dyn Fn(String) -> AugmentError,
) -> std::result::Result<f32, AugmentError> {
    if v.is_nan() {
        Err(err("needs an amount, e.g. brightness(0.2)".into()))
    } else {
        Ok(v)
    }
}

impl fmt::Display for Augment {
    /// The canonical text (what config.toml stores; parses back to the same).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        if self.flip > 0.0 {
            items.push(format!("flip(p={})", self.flip));
        }
        if self.vflip > 0.0 {
            items.push(format!("vflip(p={})", self.vflip));
        }
        if self.shift > 0 {
            items.push(format!("shift({})", self.shift));
        }
        if let Some([p, s0, s1, r0, r1]) = self.resized_crop {
            items.push(format!(
                "resized_crop(scale={s0}:{s1},ratio={r0}:{r1},p={p})"
            ));
        }
        if let Some([p, deg, t, s0, s1, sh]) = self.affine {
            items.push(format!(
                "affine(rotate={deg},translate={t},scale={s0}:{s1},shear={sh},p={p})"
            ));
        }
        if let Some([p, d]) = self.perspective {
            items.push(format!("perspective(d={d},p={p})"));
        }
        if self.brightness > 0.0 {
            items.push(format!("brightness({})", self.brightness));
        }
        if self.contrast > 0.0 {
            items.push(format!("contrast({})", self.contrast));
        }
        if let Some([p, k, s0, s1]) = self.blur {
            items.push(format!("blur(k={k},sigma={s0}:{s1},p={p})"));
        }
        if self.noise > 0.0 {
            items.push(format!("noise({})", self.noise));
        }
        if let Some([p, s0, s1, r0, r1, v]) = self.erase {
            items.push(format!(
                "erase(p={p},scale={s0}:{s1},ratio={r0}:{r1},value={v})"
            ));
        }
        if items.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", items.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_round_trips_and_names_bad_items() {
        let text = "affine(rotate=10,translate=0.1,scale=0.9:1.1) flip erase(p=0.5) noise(0.05) shift(2) blur(k=5,sigma=0.5:1) perspective(0.3) resized_crop(scale=0.5:1) vflip(p=0.1) brightness(0.2) contrast(0.3)";
        let a = Augment::parse(text).unwrap();
        assert_eq!(a.flip, 0.5);
        assert_eq!(a.shift, 2);
        assert_eq!(a.perspective, Some([0.5, 0.3]));
        let again = Augment::parse(&a.to_string()).unwrap();
        assert_eq!(again.to_string(), a.to_string());
        assert_eq!(Augment::parse("none").unwrap(), Augment::default());
        for (text, says) in [
            ("rotate(10)", "unknown augmentation `rotate`"),
            ("affine(rotation=10)", "no setting `rotation`"),
            ("blur(k=4)", "odd kernel size"),
            ("noise", "needs an amount"),
            ("affine(scale=1.2:0.8)", "LO <= HI"),
            ("flip(p=2)", "p = 2 must be in [0, 1]"),
            ("erase(p=0.5", "closing"),
            ("shift(1.5)", "whole number"),
        ] {
            let e = Augment::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--augment"), "{text}: {e}");
        }
    }
}
