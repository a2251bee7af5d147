//! The examples and language reference `--help` shows after each command's options.

pub(crate) const INGEST_EXAMPLES: &str = "Examples:
  chunkcube ingest --manifest tiles.csv --out cube --chunks time=1,y=1024,x=1024
  chunkcube ingest --out cube tiles/            # ..._<YYYY>--P1Y_final_<band>.tif, recursively
  chunkcube ingest --manifest tiles.csv --out s3://bucket/cube --shards y=4096,x=4096";

pub(crate) const INFO_EXAMPLES: &str = "Examples:
  chunkcube info cube
  chunkcube info s3://bucket/cube --json | jq .bands";

pub(crate) const LOAD_EXAMPLES: &str = "Examples:
  chunkcube load cube --lon 24,25.5 --lat=-21.5,-20 --time 2019 --measurements red,nir --summary
  chunkcube load cube --isel y=100:110,x=100:110 --measurements red --print
  chunkcube load cube --chunks time=1,y=3000,x=3000 --explain
  chunkcube load cube --measurements red --graph load.svg --summary
  chunkcube load cube --bbox 2316000,-2502000,2318400,-2500000 --out window-cube";

/// `calc --help`'s examples and the expression language.
pub(crate) fn calc_help() -> String {
    format!(
        "Examples:
  chunkcube calc cube --expr 'ndvi=(nir-red)/(nir+red)' --out ndvi-cube
  chunkcube calc cube --expr '(nir-red)/(nir+red)' --reduce mean:time --print   # named 'result'
  chunkcube calc cube --expr 'ndvi=(nir-red)/(nir+red)' --expr 'green=where(ndvi>0.3, 1, 0)' --graph g.svg --explain

Expressions: [NAME=]EXPRESSION over band names and earlier results (default name '{}').
  Operators: {}
  Functions: {}
  DIM is time, y or x. Integer bands are promoted to float32 (nodata becomes NaN).",
        chunkcube::graph::DEFAULT_NAME,
        chunkcube::graph::OPERATORS,
        chunkcube::graph::FUNCTIONS
    )
}

/// `export --help`'s examples.
pub(crate) fn export_help() -> String {
    format!(
        "Examples:
  chunkcube export cube --out tifs --measurements red,nir --time 2019          # COG with overviews
  chunkcube export cube --out tifs --format GTiff --isel y=0:1000,x=0:1000
  chunkcube export cube --out look --format PNG --expr 'ndvi=(nir-red)/(nir+red)' --scale=-1,1

--expr/--reduce as for calc (see chunkcube calc --help); functions: {}",
        chunkcube::graph::FUNCTIONS
    )
}
