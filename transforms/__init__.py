"""Apache Beam PTransforms and DoFns for the cmtp stages (extract, dedup, score)."""
