//! Regenerates `datasets/tokenizer/tokenizer.json` from `datasets/corpus.txt` (run after editing the corpus).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json = tokenperf_core::tokenizer::project_tokenizer_json()?;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../datasets/tokenizer/tokenizer.json"
    );
    std::fs::write(path, json)?;
    println!("wrote {path}");
    Ok(())
}
