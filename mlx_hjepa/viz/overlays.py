"""Pictures drawn with numpy and Pillow: masks and hierarchy windows, attention, feature maps, neighbours.

Every function returns a PIL image. Overlay colours are drawn exactly (outlines, swatches) so a
colour in the legend is a colour in the picture.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
CONTEXT = (40, 110, 255)
TARGETS = [(255, 50, 50), (255, 165, 0), (225, 0, 225), (255, 240, 0), (140, 70, 20), (255, 130, 170),
           (150, 150, 150), (120, 0, 200)]
LEVELS = [(0, 255, 255), (90, 255, 0), (255, 255, 255)]  # pooling windows of levels 1, 2, 3
QUERY = (0, 255, 0)
SAME_LABEL, OTHER_LABEL = (0, 170, 60), (220, 30, 30)
PAD = 4
TEXT_H = 14
LEGEND_ROW_H = 18
HEAT = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


def font():
    return ImageFont.load_default()


def tile_scale(image_size, at_least=144):
    """Integer upscaling that makes small images (32-96 px) big enough to draw patches on."""
    return max(1, -(-at_least // image_size))


def upscale(image, scale):
    image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def blend_cells(base, cells, colour, alpha, cell_px, grid_w):
    """Tint the patch cells (raster indices) of a PIL image towards `colour`."""
    pixels = np.asarray(base, dtype=np.float32).copy()
    for cell in cells:
        r, c = divmod(int(cell), grid_w)
        block = pixels[r * cell_px:(r + 1) * cell_px, c * cell_px:(c + 1) * cell_px]
        block[:] = (1 - alpha) * block + alpha * np.array(colour, dtype=np.float32)
    return Image.fromarray(pixels.round().astype(np.uint8))


def outline(draw, top, left, h, w, cell_px, colour, inset=0, width=2):
    y0, x0 = top * cell_px + inset, left * cell_px + inset
    y1, x1 = (top + h) * cell_px - 1 - inset, (left + w) * cell_px - 1 - inset
    draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)


def level_windows(masks, i, t, level, grid):
    """(top, left, h, w) in patches of the level windows counted for target t of image i."""
    H, W = grid
    side = 2 ** level
    level_w = -(-W // side)
    idx, valid = masks[f"win_idx_{level}"][i, t], masks[f"win_valid_{level}"][i, t]
    boxes = []
    for window in idx[valid > 0]:
        r, c = divmod(int(window), level_w)
        boxes.append((r * side, c * side, min(side, H - r * side), min(side, W - c * side)))
    return boxes


def mask_tile(image, masks, i, grid, patch, scale):
    """One image with its context tokens, target blocks and each level's windows drawn over it."""
    cell = patch * scale
    tile = upscale(image, scale)
    tile = blend_cells(tile, masks["context"][i], CONTEXT, 0.35, cell, grid[1])
    for t, (top, left, h, w) in enumerate(masks["target_boxes"][i]):
        cells = [(top + r) * grid[1] + left + c for r in range(h) for c in range(w)]
        tile = blend_cells(tile, cells, TARGETS[t % len(TARGETS)], 0.3, cell, grid[1])
    draw = ImageDraw.Draw(tile)
    outline(draw, *masks["context_boxes"][i], cell, CONTEXT, width=2)
    levels = sorted(int(k.rsplit("_", 1)[1]) for k in masks if k.startswith("win_idx_"))
    for t, box in enumerate(masks["target_boxes"][i]):
        outline(draw, *box, cell, TARGETS[t % len(TARGETS)], width=2)
        for level in levels:
            for window in level_windows(masks, i, t, level, grid):
                outline(draw, *window, cell, LEVELS[(level - 1) % len(LEVELS)], inset=2 + 2 * level, width=2)
    return tile


def legend_items(num_targets, num_levels):
    items = [("context", CONTEXT)] + [(f"target {t + 1}", TARGETS[t % len(TARGETS)]) for t in range(num_targets)]
    return items + [(f"level {lv} windows ({2 ** lv}x{2 ** lv})", LEVELS[(lv - 1) % len(LEVELS)])
                    for lv in range(1, num_levels)]


def legend(items, width):
    """Swatches with names, wrapped into rows of `width` pixels."""
    f, x, rows = font(), PAD, [[]]
    for name, colour in items:
        w = 16 + int(f.getlength(name)) + 14
        if x + w > width and rows[-1]:
            rows.append([])
            x = PAD
        rows[-1].append((x, name, colour))
        x += w
    image = Image.new("RGB", (width, LEGEND_ROW_H * len(rows) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        y = PAD + r * LEGEND_ROW_H
        for x, name, colour in row:
            draw.rectangle([x, y, x + 11, y + 11], fill=colour, outline=INK if colour == BACKGROUND else colour)
            draw.text((x + 16, y), name, fill=INK, font=f)
    return image


def stack(rows, pad=PAD):
    """Rows (lists of PIL images) -> one image, left-aligned, on white."""
    widths = [sum(im.width for im in row) + pad * (len(row) + 1) for row in rows]
    heights = [max(im.height for im in row) for row in rows]
    canvas = Image.new("RGB", (max(widths), sum(heights) + pad * (len(rows) + 1)), BACKGROUND)
    y = pad
    for row, h in zip(rows, heights):
        x = pad
        for im in row:
            canvas.paste(im, (x, y))
            x += im.width + pad
        y += h + pad
    return canvas


def text_tile(text, width, height=TEXT_H, colour=INK):
    image = Image.new("RGB", (max(width, 1), height), BACKGROUND)
    ImageDraw.Draw(image).text((1, 1), text, fill=colour, font=font())
    return image


def captioned(image, text, colour=INK):
    return stack([[image], [text_tile(text, image.width, colour=colour)]], pad=0)


def masks_grid(images, masks, grid, patch, columns=4):
    """Section 1: a grid of training images with their masks, and the legend below it.
    Returns (picture, height of the grid part above the legend)."""
    scale = tile_scale(images.shape[1])
    tiles = [mask_tile(images[i], masks, i, grid, patch, scale) for i in range(len(images))]
    body = stack([tiles[r:r + columns] for r in range(0, len(tiles), columns)])
    levels = 1 + sum(1 for k in masks if k.startswith("win_idx_"))
    key = legend(legend_items(masks["target_boxes"].shape[1], levels), body.width)
    return stack([[body], [key]], pad=0), body.height


def heat_overlay(image, heat, scale, alpha=0.6):
    """A (h, w) map scaled to [0, 1] between its minimum and maximum, coloured and blended over the upscaled image."""
    size = (image.shape[1] * scale, image.shape[0] * scale)
    heat = np.asarray(heat, dtype=np.float32)
    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
    smooth = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize(size, Image.BILINEAR), np.float32) / 255
    position = smooth * (len(HEAT) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(HEAT) - 2)
    frac = (position - low)[..., None]
    colour = HEAT[low] * (1 - frac) + HEAT[low + 1] * frac
    base = np.asarray(upscale(image, scale), dtype=np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * colour).round().astype(np.uint8))


def query_patches(grid, count=3):
    """A few spread-out query patches: centre, upper left, lower right."""
    H, W = grid
    spots = [(H // 2, W // 2), (H // 4, W // 4), (3 * H // 4, 3 * W // 4), (H // 4, 3 * W // 4)]
    return [r * W + c for r, c in spots[:count]]


def attention_figure(images, weights, grid, patch, queries):
    """Section 2: per image and head, where the chosen query patches and all queries (mean) attend."""
    scale = tile_scale(images.shape[1], at_least=96)
    cell = patch * scale
    rows = []
    for i, image in enumerate(images):
        heads = weights[i]
        header = [text_tile(f"image {i + 1}", image.shape[1] * scale)]
        header += [text_tile(f"query {q + 1}", image.shape[1] * scale) for q in range(len(queries))]
        rows.append(header + [text_tile("mean of queries", image.shape[1] * scale)])
        for h, attn in enumerate(heads):
            marked = upscale(image, scale)
            draw = ImageDraw.Draw(marked)
            for q in queries:
                outline(draw, *divmod(q, grid[1]), 1, 1, cell, QUERY)
            row = [captioned(marked, f"head {h + 1}")]
            for q in queries:
                tile = heat_overlay(image, attn[q].reshape(grid), scale)
                outline(ImageDraw.Draw(tile), *divmod(q, grid[1]), 1, 1, cell, QUERY)
                row.append(captioned(tile, f"head {h + 1}"))
            row.append(captioned(heat_overlay(image, attn.mean(axis=0).reshape(grid), scale), f"head {h + 1}"))
            rows.append(row)
    return stack(rows)


def features_figure(images, maps):
    """Section 3: images over their PCA colour maps; `maps` is {row name: (B, h, w, 3) in [0, 1]}."""
    scale = tile_scale(images.shape[1], at_least=96)
    size = images.shape[1] * scale
    rows = [[captioned(upscale(im, scale), "image") for im in images]]
    for name, rgb in maps.items():
        rows.append([captioned(Image.fromarray((m * 255).round().astype(np.uint8)).resize((size, size), Image.NEAREST),
                               name) for m in rgb])
    return stack(rows)


def bordered(image, colour, width=3):
    framed = Image.new("RGB", (image.width + 2 * width, image.height + 2 * width), colour)
    framed.paste(image, (width, width))
    return framed


def neighbours_figure(queries, query_labels, columns, classes):
    """Section 4: each query beside its neighbours. `columns` is {name: (images (Q, k, H, W, 3), labels (Q, k))};
    a neighbour's frame is green when its label is the query's, red otherwise."""
    scale = tile_scale(queries.shape[1], at_least=64)
    size = queries.shape[1] * scale + 6
    def name_of(label):
        return classes[label] if 0 <= label < len(classes) else str(label)
    gap = Image.new("RGB", (10, 1), BACKGROUND)
    header = [text_tile("query", size)]
    for name, (images, _) in columns.items():
        header += [gap] + [text_tile(name if j == 0 else "", size) for j in range(images.shape[1])]
    rows = [header]
    for q, image in enumerate(queries):
        row = [captioned(bordered(upscale(image, scale), INK), name_of(int(query_labels[q])))]
        for images, labels in columns.values():
            row.append(gap)
            for j in range(images.shape[1]):
                same = int(labels[q, j]) == int(query_labels[q])
                colour = SAME_LABEL if same else OTHER_LABEL
                row.append(captioned(bordered(upscale(images[q, j], scale), colour), name_of(int(labels[q, j])), colour))
        rows.append(row)
    return stack(rows)
