//! The one drawing backend every chart draws on: a PNG (plotters' bitmap backend) or an SVG for
//! `REPORT.html` (plotters' SVG backend, plus hover titles), so one draw function makes both.

use plotters::{
    coord::Shift,
    element::{Drawable, PointCollection},
    prelude::*,
};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::report::html::escape;

/// A drawing error of either backend, as text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CanvasError(String);

/// An area hovering shows a title on (SVG only): a circle around a point, or a rectangle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TipShape {
    Circle {
        center: BackendCoord,
        radius: u32,
    },
    Rect {
        corner: BackendCoord,
        opposite: BackendCoord,
    },
}

/// A hover title recorded while drawing an SVG, in image pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipMark {
    pub shape: TipShape,
    pub title: String,
}

/// Where a chart is drawn.
pub enum Canvas<'a> {
    Png(BitMapBackend<'a>),
    /// The SVG, and the hover titles to lay over it once it is drawn.
    Svg(SVGBackend<'a>, &'a mut Vec<TipMark>),
}

/// A backend that can carry hover titles (`Canvas`; the PNG ignores them).
pub trait ChartBackend: DrawingBackend {
    fn tip(&mut self, mark: TipMark);
}

impl ChartBackend for Canvas<'_> {
    fn tip(&mut self, mark: TipMark) {
        if let Canvas::Svg(_, tips) = self {
            tips.push(mark);
        }
    }
}

fn lift<E: std::error::Error + Send + Sync>(
    error: DrawingErrorKind<E>,
) -> DrawingErrorKind<CanvasError> {
    match error {
        DrawingErrorKind::DrawingError(e) => {
            DrawingErrorKind::DrawingError(CanvasError(e.to_string()))
        }
        DrawingErrorKind::FontError(e) => DrawingErrorKind::FontError(e),
    }
}

/// Calls the same method on whichever backend the canvas holds.
macro_rules! delegate {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            Canvas::Png($backend) => $call.map_err(lift),
            Canvas::Svg($backend, _) => $call.map_err(lift),
        }
    };
}

// Every method is passed on, including those with default implementations, so each backend keeps
// its own (the SVG backend writes `<text>`, `<polyline>` and `<circle>` elements; the bitmap one
// rasterises them exactly as it did before the canvas existed).
impl DrawingBackend for Canvas<'_> {
    type ErrorType = CanvasError;

    fn get_size(&self) -> (u32, u32) {
        match self {
            Canvas::Png(b) => b.get_size(),
            Canvas::Svg(b, _) => b.get_size(),
        }
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.ensure_prepared())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.present())
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.draw_pixel(point, color))
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.draw_line(from, to, style))
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        match self {
            // plotters' SVG rectangle has no stroke width: an outline drawn wider than one pixel
            // (a flagged cell's hollow bar) is drawn as a closed line instead, as wide as in the
            // PNG. The path repeats its first side so the starting corner is joined like the rest.
            Canvas::Svg(b, _) if !fill && style.stroke_width() > 1 => {
                let ((left, top), (right, bottom)) = (upper_left, bottom_right);
                let outline = [
                    (left, top),
                    (right, top),
                    (right, bottom),
                    (left, bottom),
                    (left, top),
                    (right, top),
                ];
                b.draw_path(outline, style).map_err(lift)
            }
            _ => delegate!(self, b => b.draw_rect(upper_left, bottom_right, style, fill)),
        }
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.draw_path(path, style))
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.draw_circle(center, radius, style, fill))
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.fill_polygon(vert, style))
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.draw_text(text, style, pos))
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.estimate_text_size(text, style))
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        delegate!(self, b => b.blit_bitmap(pos, size, src))
    }
}

/// A chart element that draws nothing and gives the area under it a hover title in the SVG:
/// `Tip::point` (a circle around a data point) or `Tip::area` (a rectangle between two corners).
pub struct Tip<C> {
    points: [C; 2],
    radius: Option<u32>,
    title: String,
}

impl<C: Clone> Tip<C> {
    pub fn point(at: C, radius: u32, title: impl Into<String>) -> Self {
        Self {
            points: [at.clone(), at],
            radius: Some(radius),
            title: title.into(),
        }
    }
}

impl<C> Tip<C> {
    pub fn area(corner: C, opposite: C, title: impl Into<String>) -> Self {
        Self {
            points: [corner, opposite],
            radius: None,
            title: title.into(),
        }
    }
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a Tip<C> {
    type Point = &'a C;
    type IntoIter = &'a [C];

    fn point_iter(self) -> &'a [C] {
        &self.points
    }
}

impl<C, DB: ChartBackend> Drawable<DB> for Tip<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let (Some(corner), Some(opposite)) = (pos.next(), pos.next()) else {
            return Ok(());
        };
        let shape = match self.radius {
            Some(radius) => TipShape::Circle {
                center: corner,
                radius,
            },
            None => TipShape::Rect { corner, opposite },
        };
        backend.tip(TipMark {
            shape,
            title: self.title.clone(),
        });
        Ok(())
    }
}

/// A canvas's drawing area, as chart draw functions receive it.
pub type Area<'a> = DrawingArea<Canvas<'a>, Shift>;

/// The hover layer: one transparent shape with a `<title>` per mark, to put last in the SVG so it
/// lies over everything drawn.
pub fn tip_layer(tips: &[TipMark]) -> String {
    if tips.is_empty() {
        return String::new();
    }
    let mut out = String::from("<g class=\"tips\" fill=\"transparent\" pointer-events=\"all\">\n");
    for tip in tips {
        let title = escape(&tip.title);
        match tip.shape {
            TipShape::Circle { center, radius } => out.push_str(&format!(
                "<circle class=\"tip\" cx=\"{}\" cy=\"{}\" r=\"{radius}\"><title>{title}</title></circle>\n",
                center.0, center.1
            )),
            TipShape::Rect { corner, opposite } => {
                let (x0, x1) = (corner.0.min(opposite.0), corner.0.max(opposite.0));
                let (y0, y1) = (corner.1.min(opposite.1), corner.1.max(opposite.1));
                out.push_str(&format!(
                    "<rect class=\"tip\" x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\"><title>{title}</title></rect>\n",
                    x1 - x0,
                    y1 - y0
                ));
            }
        }
    }
    out.push_str("</g>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tips_are_escaped_and_normalised() {
        let layer = tip_layer(&[
            TipMark {
                shape: TipShape::Circle {
                    center: (10, 20),
                    radius: 7,
                },
                title: "a<b & \"c\" 'd'".into(),
            },
            TipMark {
                shape: TipShape::Rect {
                    corner: (50, 40),
                    opposite: (10, 60),
                },
                title: "bar".into(),
            },
        ]);
        assert!(layer.contains("<title>a&lt;b &amp; &quot;c&quot; &#39;d&#39;</title>"));
        assert!(layer.contains("x=\"10\" y=\"40\" width=\"40\" height=\"20\""));
        assert_eq!(tip_layer(&[]), "");
    }
}
