//! The restart plugin hook.
//!
//! Called by the restarter after every range of the image is reserved (and filled) and
//! before the restarter unmaps itself. **This is where the MPI lower half will be loaded
//! and `MPI_Init` run** (DESIGN.md §5): at that point nothing the lower half maps can land
//! on an upper-half range, and the lower half stays mapped when the restarter is gone. A
//! non-MPI image needs nothing here.

use mana_image::ImageHeader;

/// What the hook may look at and tell the rest of the restart.
pub struct PluginContext<'a> {
    pub header: &'a ImageHeader,
    pub rank: u32,
    pub world_size: u32,
}

#[derive(Debug, thiserror::Error)]
#[allow(dead_code)] // constructed by the MPI restart plugin (split-process issue)
pub enum PluginError {
    #[error("{0}")]
    Failed(String),
}

/// Runs the restart plugin for this image. Non-MPI images: nothing to do.
pub fn restart_plugin_hook(ctx: &mut PluginContext<'_>) -> Result<(), PluginError> {
    tracing::debug!(
        rank = ctx.rank,
        world_size = ctx.world_size,
        regions = ctx.header.regions.len(),
        "restart plugin hook: no lower half for a non-MPI image"
    );
    Ok(())
}
