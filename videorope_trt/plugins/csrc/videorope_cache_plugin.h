// TensorRT IPluginV3 for the VideoRopeCache op: name "VideoRopeCache", version "1", namespace "videorope", in the same
// library as VideoRope. Its cache outputs alias its cache inputs (IPluginV3OneBuildV2::getAliasedInput), so TensorRT
// hands the plugin one buffer per cache and the rows are written in place.
//
// IPluginV3OneBuildV2 (v_2_0::IPluginV3OneBuild, InterfaceInfo {"PLUGIN_V3ONE_BUILD", 2, 0}) and
// PreviewFeature::kALIASED_PLUGIN_IO_10_03 first appear in the TensorRT 10.3 headers and are unchanged in 10.13 and
// 11.1 (TensorRT-RTX has them too); with older headers this plugin is left out of the library.
#pragma once

#include "videorope_plugin.h"

#include <NvInferVersion.h>

#if defined(TRT_MAJOR_RTX) || NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 3)
#define VIDEOROPE_CACHE_PLUGIN 1
#else
#define VIDEOROPE_CACHE_PLUGIN 0
#endif

#if VIDEOROPE_CACHE_PLUGIN

namespace videorope
{

class VideoRopeCachePlugin : public nvinfer1::IPluginV3,
                             public nvinfer1::IPluginV3OneCore,
                             public nvinfer1::IPluginV3OneBuildV2,
                             public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit VideoRopeCachePlugin(RopeAttrs const& attrs);
    ~VideoRopeCachePlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuildV2
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t getAliasedInput(int32_t outputIndex) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    RopeAttrs mAttrs;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class VideoRopeCacheCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    VideoRopeCacheCreator();
    ~VideoRopeCacheCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

//! The library's one VideoRopeCache creator (getCreators lists it after VideoRope's).
nvinfer1::IPluginCreatorInterface* videoRopeCacheCreator();

//! The contract's shape rules for the nine inputs (q, k, v, positions, inv_freq, axis_map, k_cache, v_cache,
//! write_offset); -1 matches anything. Empty string when valid, else the reason.
std::string checkCacheShapes(nvinfer1::Dims const* in, int32_t layout);

} // namespace videorope

#endif // VIDEOROPE_CACHE_PLUGIN
